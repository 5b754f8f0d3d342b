/**
 * loadConfig() on every option: a bad value stops the process at start-up with
 * a ConfigError that names the variable and quotes the value (p-queue's
 * assert.throws on every option). No process.env: each case passes its own env.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { ConfigError, DEV_JWT_SECRET, loadConfig, type Config } from '../../src/config.js';

type Env = Record<string, string | undefined>;

/** What a production deployment sets at least (k8s/gateway.env has the same three). */
const PRODUCTION: Env = { NODE_ENV: 'production', AWS_REGION: 'eu-west-1', JWT_SECRET: 'a-production-secret-of-some-length' };

/** loadConfig(env) throws a ConfigError whose message names `name` and, when given, quotes `value`. */
function refuses(env: Env, name: string, value?: string): ConfigError {
  let caught: unknown;
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => ((caught = err), true),
  );
  assert.ok(caught instanceof ConfigError, `a ConfigError, got ${String(caught)}`);
  assert.equal(caught.code, 'ERR_CONFIG');
  assert.match(caught.message, new RegExp(`(^|[^A-Z_])${name}([^A-Z_]|$)`), `"${caught.message}" names ${name}`);
  if (value !== undefined) assert.ok(caught.message.includes(`"${value}"`), `"${caught.message}" quotes "${value}"`);
  return caught;
}

/** Whole-number options: name, smallest and largest accepted value (undefined: no upper bound but MAX_SAFE_INTEGER). */
const WHOLE_NUMBERS: ReadonlyArray<{ name: string; key: keyof Config; fallback: number; min: number; max?: number }> = [
  { name: 'PORT', key: 'port', fallback: 3000, min: 0, max: 65535 },
  { name: 'OPS_PORT', key: 'opsPort', fallback: 3001, min: 0, max: 65535 },
  { name: 'MAX_STREAMS', key: 'maxStreams', fallback: 3, min: 1, max: 1000 },
  { name: 'PING_INTERVAL_MS', key: 'pingIntervalMs', fallback: 20000, min: 10 },
  { name: 'PONG_TIMEOUT_MS', key: 'pongTimeoutMs', fallback: 10000, min: 10 },
  { name: 'INSTANCE_HEARTBEAT_MS', key: 'instanceHeartbeatMs', fallback: 5000, min: 50 },
  { name: 'INSTANCE_TTL_MS', key: 'instanceTtlMs', fallback: 20000, min: 100 },
  { name: 'FENCING_MARGIN_MS', key: 'fencingMarginMs', fallback: 5000, min: 1 },
  { name: 'ADMISSION_TIMEOUT_MS', key: 'admissionTimeoutMs', fallback: 3000, min: 10 },
  { name: 'RECONCILE_INTERVAL_MS', key: 'reconcileIntervalMs', fallback: 60000, min: 10 },
  { name: 'UNCERTAIN_WRITE_HORIZON_MS', key: 'uncertainWriteHorizonMs', fallback: 360000, min: 100 },
  { name: 'DRAIN_MS', key: 'drainMs', fallback: 10000, min: 0 },
  { name: 'DYNAMODB_REQUEST_TIMEOUT_MS', key: 'dynamodbRequestTimeoutMs', fallback: 1000, min: 10 },
  { name: 'DYNAMODB_MAX_ATTEMPTS', key: 'dynamodbMaxAttempts', fallback: 3, min: 1, max: 10 },
  { name: 'MAX_PAYLOAD_BYTES', key: 'maxPayloadBytes', fallback: 4096, min: 128, max: 1024 * 1024 },
  { name: 'TRUSTED_PROXY_HOPS', key: 'trustedProxyHops', fallback: 0, min: 0, max: 10 },
  { name: 'CONNECT_RATE_PER_IP', key: 'connectRatePerIp', fallback: 20, min: 1 },
  { name: 'CONNECT_BURST_PER_IP', key: 'connectBurstPerIp', fallback: 40, min: 1 },
  { name: 'CONNECT_RATE_PER_USER', key: 'connectRatePerUser', fallback: 5, min: 1 },
  { name: 'CONNECT_BURST_PER_USER', key: 'connectBurstPerUser', fallback: 20, min: 1 },
  { name: 'BLOCK_AFTER_REJECTIONS', key: 'blockAfterRejections', fallback: 20, min: 1 },
  { name: 'BLOCK_MS', key: 'blockMs', fallback: 60000, min: 0 },
  { name: 'MESSAGE_RATE_PER_SOCKET', key: 'messageRatePerSocket', fallback: 5, min: 1 },
  { name: 'MESSAGE_BURST_PER_SOCKET', key: 'messageBurstPerSocket', fallback: 20, min: 1 },
  { name: 'MAX_CONNECTIONS', key: 'maxConnections', fallback: 20000, min: 1 },
  // listen(2) takes an int: Node passes the low 32 bits, so 4294967296 would silently be a queue of one.
  { name: 'LISTEN_BACKLOG', key: 'listenBacklog', fallback: 4096, min: 1, max: 2147483647 },
  { name: 'HANDSHAKE_TIMEOUT_MS', key: 'handshakeTimeoutMs', fallback: 10000, min: 100 },
  { name: 'JWKS_REFRESH_MS', key: 'jwksRefreshMs', fallback: 300000, min: 100 },
  { name: 'JWKS_MAX_STALE_MS', key: 'jwksMaxStaleMs', fallback: 3600000, min: 100 },
  { name: 'JWKS_COOLDOWN_MS', key: 'jwksCooldownMs', fallback: 30000, min: 0 },
];

/**
 * Values that sit fine with the cross-checks when one timing option is pushed to a bound: a huge TTL leaves room for
 * any heartbeat and margin, a huge ping interval for any pong timeout, and so on.
 */
const ROOM: Env = { INSTANCE_TTL_MS: String(Number.MAX_SAFE_INTEGER), PING_INTERVAL_MS: String(Number.MAX_SAFE_INTEGER) };
function roomFor(name: string): Env {
  if (name === 'INSTANCE_TTL_MS') return { INSTANCE_HEARTBEAT_MS: '50', FENCING_MARGIN_MS: '1' };
  if (name === 'PING_INTERVAL_MS') return { PONG_TIMEOUT_MS: '10' };
  return ROOM;
}

describe('whole-number options', () => {
  for (const opt of WHOLE_NUMBERS) {
    test(`${opt.name}: default ${opt.fallback}, blank means default, surrounding spaces are trimmed`, () => {
      assert.equal(loadConfig({})[opt.key], opt.fallback);
      assert.equal(loadConfig({ [opt.name]: '' })[opt.key], opt.fallback);
      assert.equal(loadConfig({ [opt.name]: '   ' })[opt.key], opt.fallback);
      const spaced = String(opt.min + 1);
      assert.equal(loadConfig({ ...roomFor(opt.name), [opt.name]: ` ${spaced} ` })[opt.key], opt.min + 1);
    });

    test(`${opt.name}: not a whole number is refused, naming it and quoting the value`, () => {
      for (const bad of ['abc', '1.5', '-1', '+5', '1e3', '0x10', '12ms', '1_000', '٣', 'Infinity', 'NaN', '5 5']) {
        const err = refuses({ [opt.name]: bad }, opt.name, bad);
        assert.match(err.message, /whole number/);
      }
      // The trimmed value is the one quoted.
      refuses({ [opt.name]: '  nope ' }, opt.name, 'nope');
    });

    test(`${opt.name}: bounds ${opt.min}..${opt.max ?? 'MAX_SAFE_INTEGER'} accepted, one past them refused`, () => {
      const room = roomFor(opt.name);
      assert.equal(loadConfig({ ...room, [opt.name]: String(opt.min) })[opt.key], opt.min);
      if (opt.min > 0) {
        const err = refuses({ ...room, [opt.name]: String(opt.min - 1) }, opt.name, String(opt.min - 1));
        assert.match(err.message, new RegExp(`between ${opt.min} and `));
      }
      const max = opt.max ?? Number.MAX_SAFE_INTEGER;
      if (opt.max !== undefined) assert.equal(loadConfig({ ...room, [opt.name]: String(max) })[opt.key], max);
      // One past the top; beyond MAX_SAFE_INTEGER a number would silently round, so it is refused too.
      const over = opt.max !== undefined ? String(max + 1) : '9007199254740993';
      refuses({ ...room, [opt.name]: over }, opt.name, over);
      refuses({ ...room, [opt.name]: '1'.repeat(400) }, opt.name);
    });
  }
});

describe('enumerations and booleans', () => {
  test('STORE must be embedded or dynamodb', () => {
    for (const bad of ['memory', 'DynamoDB', 'EMBEDDED', 'redis', 'dynamo']) {
      const err = refuses({ STORE: bad }, 'STORE', bad);
      assert.match(err.message, /embedded, dynamodb/);
    }
    assert.equal(loadConfig({ STORE: 'embedded' }).store, 'embedded');
    assert.equal(loadConfig({ STORE: 'dynamodb', AWS_REGION: 'eu-west-1' }).store, 'dynamodb');
  });

  test('LOG_LEVEL must be one of the five levels, spelled in lower case', () => {
    for (const bad of ['verbose', 'INFO', 'trace', 'warning', '3']) {
      const err = refuses({ LOG_LEVEL: bad }, 'LOG_LEVEL', bad);
      assert.match(err.message, /debug, info, warn, error, silent/);
    }
    for (const level of ['debug', 'info', 'warn', 'error', 'silent'] as const)
      assert.equal(loadConfig({ LOG_LEVEL: level }).logLevel, level);
    assert.equal(loadConfig({}).logLevel, 'info');
  });

  test('CREATE_TABLE must be true or false (true/1/yes, false/0/no, any case)', () => {
    for (const bad of ['maybe', 'on', 'off', 'y', '2', 'truee']) refuses({ CREATE_TABLE: bad }, 'CREATE_TABLE', bad);
    for (const yes of ['true', 'TRUE', '1', 'yes', 'Yes']) assert.equal(loadConfig({ CREATE_TABLE: yes }).createTable, true);
    for (const no of ['false', 'False', '0', 'no', 'NO']) assert.equal(loadConfig({ CREATE_TABLE: no }).createTable, false);
  });

  test('MAX_STREAMS_BY_CLASS keeps every class it names, even one called __proto__ or constructor', () => {
    const caps = loadConfig({ MAX_STREAMS_BY_CLASS: 'tv:1, __proto__:2, constructor:3' }).maxStreamsByClass!;
    assert.deepEqual(Object.entries(caps), [
      ['tv', 1],
      ['__proto__', 2],
      ['constructor', 3],
    ]);
    assert.equal(Object.hasOwn(caps, '__proto__'), true);
    for (const bad of ['tv', 'tv:0', 'tv:x', 'a b:1']) refuses({ MAX_STREAMS_BY_CLASS: bad }, 'MAX_STREAMS_BY_CLASS', bad);
  });

  test('CREATE_TABLE defaults to true on the embedded store and DynamoDB Local, false on AWS', () => {
    assert.equal(loadConfig({}).createTable, true);
    assert.equal(loadConfig({ DYNAMODB_ENDPOINT: 'http://127.0.0.1:8000' }).createTable, true);
    assert.equal(loadConfig({ AWS_REGION: 'eu-west-1' }).createTable, false);
  });
});

describe('store selection', () => {
  test('no region and no endpoint outside production: the embedded store', () => {
    assert.equal(loadConfig({}).store, 'embedded');
  });

  test('a region or an endpoint selects DynamoDB; AWS_DEFAULT_REGION counts as a region', () => {
    assert.equal(loadConfig({ AWS_REGION: 'eu-west-1' }).store, 'dynamodb');
    assert.equal(loadConfig({ DYNAMODB_ENDPOINT: 'http://127.0.0.1:8000' }).store, 'dynamodb');
    const fallback = loadConfig({ AWS_DEFAULT_REGION: 'us-east-1' });
    assert.equal(fallback.store, 'dynamodb');
    assert.equal(fallback.awsRegion, 'us-east-1');
    assert.equal(loadConfig({ AWS_REGION: 'eu-west-1', AWS_DEFAULT_REGION: 'us-east-1' }).awsRegion, 'eu-west-1');
  });

  test('STORE=dynamodb without a region or an endpoint is refused', () => {
    const err = refuses({ STORE: 'dynamodb' }, 'STORE');
    assert.match(err.message, /AWS_REGION/);
    assert.match(err.message, /DYNAMODB_ENDPOINT/);
  });
});

describe('token keys', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const p256 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const ed25519 = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const SECRET = 'this-is-the-shared-secret-0123456789';

  test('no key outside production: the development secret, flagged', () => {
    const { auth } = loadConfig({});
    assert.equal(auth.secret, DEV_JWT_SECRET);
    assert.equal(auth.devSecret, true);
    assert.equal(loadConfig({ JWT_SECRET: SECRET }).auth.devSecret, false);
  });

  test('more than one of JWT_SECRET, JWT_PUBLIC_KEY and JWKS_URL is refused, naming all three and quoting no key', () => {
    const pairs: Env[] = [
      { JWT_SECRET: SECRET, JWT_PUBLIC_KEY: rsa },
      { JWT_SECRET: SECRET, JWKS_URL: 'https://id.example.com/jwks.json' },
      { JWT_PUBLIC_KEY: rsa, JWKS_URL: 'https://id.example.com/jwks.json' },
      { JWT_SECRET: SECRET, JWT_PUBLIC_KEY: rsa, JWKS_URL: 'https://id.example.com/jwks.json' },
    ];
    for (const env of pairs) {
      const err = refuses(env, 'JWT_SECRET');
      assert.match(err.message, /JWT_PUBLIC_KEY/);
      assert.match(err.message, /JWKS_URL/);
      // A secret must never reach a log line, even in the message that refuses it.
      assert.ok(!err.message.includes(SECRET), 'the secret is not in the message');
    }
  });

  test('JWKS_URL must be an http(s) URL', () => {
    for (const bad of [
      'not a url',
      'id.example.com/jwks.json',
      'ftp://id.example.com/jwks.json',
      'file:///etc/jwks.json',
      'javascript:alert(1)',
      '//id.example.com/jwks',
    ]) {
      const err = refuses({ JWKS_URL: bad }, 'JWKS_URL', bad);
      assert.match(err.message, /http\(s\) URL/);
    }
    for (const good of ['https://id.example.com/.well-known/jwks.json', 'http://127.0.0.1:9000/jwks']) {
      assert.equal(loadConfig({ JWKS_URL: good }).auth.jwksUrl, good);
    }
  });

  test('JWT_PUBLIC_KEY that is not a PEM public key is refused', () => {
    for (const bad of ['not a pem', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----', SECRET]) {
      const err = refuses({ JWT_PUBLIC_KEY: bad }, 'JWT_PUBLIC_KEY');
      assert.match(err.message, /not a PEM public key/);
    }
  });

  test('JWT_PUBLIC_KEY must be RSA or P-256: the key type decides the algorithm', () => {
    assert.equal(loadConfig({ JWT_PUBLIC_KEY: rsa }).auth.publicKeyPem, rsa.trim());
    assert.equal(loadConfig({ JWT_PUBLIC_KEY: p256 }).auth.publicKeyPem, p256.trim());
    for (const [bad, type] of [
      [p384, 'ec'],
      [ed25519, 'ed25519'],
    ]) {
      const err = refuses({ JWT_PUBLIC_KEY: bad }, 'JWT_PUBLIC_KEY');
      assert.match(err.message, new RegExp(`got ${type}$`));
    }
  });

  // Found while writing this tier: createPublicKey() derives the public half of a private key, so a private key
  // pasted into JWT_PUBLIC_KEY loads, and the signing key then sits in every gateway's environment.
  test('JWT_PUBLIC_KEY holding a private key is refused', () => {
    const pkcs8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const err = refuses({ JWT_PUBLIC_KEY: pkcs8 }, 'JWT_PUBLIC_KEY');
    assert.match(err.message, /private/);
  });

  test('JWT_PUBLIC_KEY on one line with \\n escapes (as in a .env file) is read as the PEM', () => {
    const oneLine = rsa.trim().replace(/\n/g, '\\n');
    assert.equal(loadConfig({ JWT_PUBLIC_KEY: oneLine }).auth.publicKeyPem, rsa.trim());
  });
});

describe('ALLOWED_ORIGINS', () => {
  test('any origin in development, none in production unless listed', () => {
    assert.equal(loadConfig({}).allowedOrigins, '*');
    assert.deepEqual(loadConfig(PRODUCTION).allowedOrigins, new Set());
    assert.equal(loadConfig({ ...PRODUCTION, ALLOWED_ORIGINS: '*' }).allowedOrigins, '*');
  });

  test('a comma-separated list of exact origins; spaces and empty entries are ignored', () => {
    const { allowedOrigins } = loadConfig({ ALLOWED_ORIGINS: ' https://www.example.com ,, http://localhost:8080,https://[::1]:8443 ,' });
    assert.deepEqual(allowedOrigins, new Set(['https://www.example.com', 'http://localhost:8080', 'https://[::1]:8443']));
  });

  test('anything but an exact scheme://host[:port] is refused, quoting the bad entry', () => {
    const bad = [
      'https://www.example.com/', // trailing slash
      'https://www.example.com/app', // path
      'https://www.example.com?x=1',
      'www.example.com', // no scheme
      '*.example.com', // no wildcards but the lone '*'
      'https://WWW.example.com', // browsers send the host in lower case
      'https://www.example.com:443', // browsers leave out the default port
      'null',
      'https://user@www.example.com',
    ];
    for (const origin of bad) {
      const err = refuses({ ALLOWED_ORIGINS: `https://ok.example.com,${origin}` }, 'ALLOWED_ORIGINS', origin);
      assert.match(err.message, /exact origins/);
    }
    // '*' only means "any" on its own.
    refuses({ ALLOWED_ORIGINS: 'https://ok.example.com,*' }, 'ALLOWED_ORIGINS', '*');
  });

  // Found while writing this tier: the URL parser takes '*' as a host character, so the entry is kept as a literal
  // origin that no browser ever sends, and an operator who meant a wildcard gets every page refused without a word.
  test('a wildcard inside an origin is refused, not kept as a literal that matches nothing', () => {
    refuses({ ALLOWED_ORIGINS: 'https://*.example.com' }, 'ALLOWED_ORIGINS', 'https://*.example.com');
  });
});

describe('production rules (NODE_ENV=production)', () => {
  test('the minimal production settings load', () => {
    const config = loadConfig(PRODUCTION);
    assert.equal(config.production, true);
    assert.equal(config.store, 'dynamodb');
    assert.equal(config.auth.devSecret, false);
    assert.equal(config.createTable, false);
  });

  test('no token key is refused: the development secret is never used in production', () => {
    const err = refuses({ ...PRODUCTION, JWT_SECRET: undefined }, 'NODE_ENV');
    assert.match(err.message, /JWT_SECRET, JWT_PUBLIC_KEY or JWKS_URL/);
    refuses({ ...PRODUCTION, JWT_SECRET: '  ' }, 'NODE_ENV');
  });

  test('STORE=embedded is refused: leases in one process are not shared', () => {
    const err = refuses({ ...PRODUCTION, STORE: 'embedded' }, 'STORE');
    assert.match(err.message, /NODE_ENV=production/);
  });

  test('no region and no endpoint: the store defaults to DynamoDB and asks for AWS_REGION', () => {
    const err = refuses({ ...PRODUCTION, AWS_REGION: undefined }, 'AWS_REGION');
    assert.match(err.message, /STORE=dynamodb/);
  });

  test('only NODE_ENV=production is production', () => {
    for (const nodeEnv of ['Production', 'prod', 'staging', 'test']) {
      const config = loadConfig({ NODE_ENV: nodeEnv });
      assert.equal(config.production, false);
      assert.equal(config.nodeEnv, nodeEnv);
    }
  });
});

describe('timing cross-checks', () => {
  test('FENCING_MARGIN_MS must leave at least one heartbeat before the TTL', () => {
    // Defaults: TTL 20000, heartbeat 5000, so the margin must be below 15000.
    assert.equal(loadConfig({ FENCING_MARGIN_MS: '14999' }).fencingMarginMs, 14999);
    const defaults: Env = { FENCING_MARGIN_MS: '5000', INSTANCE_TTL_MS: '20000', INSTANCE_HEARTBEAT_MS: '5000' };
    const refused: Env[] = [
      { FENCING_MARGIN_MS: '15000' },
      { FENCING_MARGIN_MS: '20000' },
      { INSTANCE_TTL_MS: '3000', INSTANCE_HEARTBEAT_MS: '500', FENCING_MARGIN_MS: '2500' },
      { INSTANCE_TTL_MS: '1000', INSTANCE_HEARTBEAT_MS: '1000', FENCING_MARGIN_MS: '1' },
      { INSTANCE_TTL_MS: '1000', INSTANCE_HEARTBEAT_MS: '5000' },
    ];
    for (const env of refused) {
      const err = refuses(env, 'FENCING_MARGIN_MS');
      // The message gives all three values it compared.
      for (const name of Object.keys(defaults)) {
        assert.match(err.message, new RegExp(`${name} \\(${env[name] ?? defaults[name]}\\)`));
      }
    }
  });

  test('FENCING_MARGIN_MS=0 is refused: a gateway must step down before its TTL runs out', () => {
    refuses({ FENCING_MARGIN_MS: '0' }, 'FENCING_MARGIN_MS', '0');
  });

  test('PONG_TIMEOUT_MS longer than PING_INTERVAL_MS is refused, quoting both', () => {
    assert.equal(loadConfig({ PING_INTERVAL_MS: '3000', PONG_TIMEOUT_MS: '2999' }).pongTimeoutMs, 2999);
    for (const [ping, pong] of [
      ['3000', '3001'],
      ['20000', '60000'],
      ['10', '11'],
    ]) {
      const err = refuses({ PING_INTERVAL_MS: ping, PONG_TIMEOUT_MS: pong }, 'PONG_TIMEOUT_MS');
      assert.match(err.message, new RegExp(`PONG_TIMEOUT_MS \\(${pong}\\)`));
      assert.match(err.message, new RegExp(`PING_INTERVAL_MS \\(${ping}\\)`));
    }
    // With the default ping interval (20000).
    refuses({ PONG_TIMEOUT_MS: '20001' }, 'PONG_TIMEOUT_MS');
  });

  test('PONG_TIMEOUT_MS equal to PING_INTERVAL_MS is accepted (one period for both, as ws does)', () => {
    const config = loadConfig({ PING_INTERVAL_MS: '20000', PONG_TIMEOUT_MS: '20000' });
    assert.equal(config.pingIntervalMs, 20000);
    assert.equal(config.pongTimeoutMs, 20000);
    assert.equal(loadConfig({ PING_INTERVAL_MS: '10', PONG_TIMEOUT_MS: '10' }).pongTimeoutMs, 10);
  });
});

describe('the result', () => {
  test('is frozen, and so are its auth settings', () => {
    const config = loadConfig({});
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.auth));
    assert.throws(() => {
      (config as { port: number }).port = 1;
    }, TypeError);
  });

  test('reads only the env it is given', () => {
    const before = process.env.PORT;
    process.env.PORT = 'not-a-port';
    try {
      assert.equal(loadConfig({}).port, 3000);
    } finally {
      if (before === undefined) delete process.env.PORT;
      else process.env.PORT = before;
    }
  });

  test('string settings: trimmed, with their defaults', () => {
    const config = loadConfig({
      HOST: ' 127.0.0.1 ',
      DYNAMODB_TABLE: ' leases ',
      JWT_ISSUER: 'https://id.example.com',
      JWT_AUDIENCE: 'sigma',
    });
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.table, 'leases');
    assert.equal(config.auth.issuer, 'https://id.example.com');
    assert.equal(config.auth.audience, 'sigma');
    const defaults = loadConfig({});
    assert.equal(defaults.host, '0.0.0.0');
    assert.equal(defaults.table, 'sigma-stream-leases');
    assert.equal(defaults.nodeEnv, 'development');
  });
});
