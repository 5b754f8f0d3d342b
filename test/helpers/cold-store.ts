/**
 * Gateways of the SDK and browser tests give DynamoDB more time than FAST_TIMINGS (requests 2 s, instance registration bounded by
 * the 1.5 s heartbeat instead of 500 ms): the first writes to a cold DynamoDB Local can be slower, and a
 * gateway whose instance registration times out after committing retries into its own item forever
 * (attribute_not_exists) and never listens. A gateway-core bug, reported to the lead.
 */
export const COLD_STORE = {
  DYNAMODB_REQUEST_TIMEOUT_MS: '2000',
  INSTANCE_HEARTBEAT_MS: '1500',
  INSTANCE_TTL_MS: '6000',
  FENCING_MARGIN_MS: '2000',
};
