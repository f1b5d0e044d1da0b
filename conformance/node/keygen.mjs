// Generates the ES256 key pair of the private_key_jwt agent with jose.
// Usage: node keygen.mjs OUT_DIR
// Writes OUT_DIR/agent-jwks.json (public JWKS, for `mandate agents add --jwks`)
// and OUT_DIR/agent-private.jwk.json (private JWK, read by oauth4webapi_check.mjs).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as jose from 'jose'

const out = process.argv[2]
if (!out) {
  console.error('usage: node keygen.mjs OUT_DIR')
  process.exit(2)
}

const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true })
const publicJwk = await jose.exportJWK(publicKey)
const kid = await jose.calculateJwkThumbprint(publicJwk)
const privateJwk = await jose.exportJWK(privateKey)

writeFileSync(
  join(out, 'agent-jwks.json'),
  JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] }, null, 2),
)
writeFileSync(join(out, 'agent-private.jwk.json'), JSON.stringify({ ...privateJwk, kid, alg: 'ES256' }))
