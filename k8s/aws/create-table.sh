#!/usr/bin/env bash
# The same table as dynamodb-table.yaml, with the AWS CLI, for those who do not
# use CloudFormation. Usage: k8s/aws/create-table.sh [table-name]   (AWS_REGION set)
set -euo pipefail
table="${1:-sigma-stream-leases}"

aws dynamodb create-table \
  --table-name "$table" \
  --attribute-definitions AttributeName=pk,AttributeType=S \
  --key-schema AttributeName=pk,KeyType=HASH \
  --billing-mode PAY_PER_REQUEST
aws dynamodb wait table-exists --table-name "$table"
# TTL is garbage collection only (it deletes hours late); the gateway decides expiry itself.
aws dynamodb update-time-to-live \
  --table-name "$table" \
  --time-to-live-specification Enabled=true,AttributeName=ttl
echo "table $table ready; set DYNAMODB_TABLE=$table and CREATE_TABLE=false"
