// Token exchange (RFC 8693) with oauth4webapi's generic grant request, against a Mandate
// that trusts a test identity provider (conformance/delegation_setup.py).
//
// human (IdP JWT) -> agent (client_secret_basic) -> MCP server A -> MCP server B: nested
// `act`, `exp` never later than the first token, introspection echoes `act`; and the RFC 8693
// error rules (requested_token_type, actor_token_type alone, unknown resource, bad subject).
//
// Environment: CONF_ISSUER, CONF_WORK (srv_a.json, srv_b.json, agt_basic.json, idp.json,
// idp-private.pem).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

const ISSUER = process.env.CONF_ISSUER
const WORK = process.env.CONF_WORK
if (!ISSUER || !WORK) {
  console.error('CONF_ISSUER and CONF_WORK must be set')
  process.exit(2)
}
const readJson = (name) => JSON.parse(readFileSync(join(WORK, name), 'utf8'))
const TE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const AT = 'urn:ietf:params:oauth:token-type:access_token'
const JWT = 'urn:ietf:params:oauth:token-type:jwt'
const srvA = readJson('srv_a.json')
const srvB = readJson('srv_b.json')
const agent = readJson('agt_basic.json')
const idp = readJson('idp.json')
const idpKey = await jose.importPKCS8(readFileSync(join(WORK, 'idp-private.pem'), 'utf8'), 'ES256')
const insecure = { [oauth.allowInsecureRequests]: true }

let passed = 0
let failed = 0
class CheckFailed extends Error {}
const expect = (cond, reason) => {
  if (!cond) throw new CheckFailed(reason)
}
const oneLine = (s) => String(s).replace(/\s+/g, ' ').slice(0, 400)
function describe(err) {
  if (err instanceof CheckFailed) return err.message
  let msg = `${err?.name ?? 'Error'}: ${err?.message ?? err}`
  if (err?.error) msg += ` error=${err.error}`
  if (err?.error_description) msg += ` (${err.error_description})`
  return msg
}
async function check(name, fn) {
  try {
    const value = await fn()
    passed++
    console.log(`PASS node.token_exchange.${name}`)
    return value ?? true
  } catch (err) {
    failed++
    if (!(err instanceof CheckFailed)) console.error(err)
    console.log(`FAIL node.token_exchange.${name}: ${oneLine(describe(err))}`)
    return undefined
  }
}

async function humanToken(sub, ttl, extra = {}) {
  const now = Math.floor(Date.now() / 1000)
  return new jose.SignJWT({ groups: ['engineering'], ...extra })
    .setProtectedHeader({ alg: 'ES256', kid: idp.kid, typ: 'JWT' })
    .setIssuer(idp.issuer)
    .setSubject(sub)
    .setAudience(ISSUER)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
    .setJti(crypto.randomUUID())
    .sign(idpKey)
}

const issuerUrl = new URL(ISSUER)
const as = await check('discovery', async () => {
  const meta = await oauth.processDiscoveryResponse(
    issuerUrl,
    await oauth.discoveryRequest(issuerUrl, { algorithm: 'oauth2', ...insecure }),
  )
  expect(meta.grant_types_supported?.includes(TE), `grant_types_supported ${JSON.stringify(meta.grant_types_supported)}`)
  expect(
    meta.token_exchange_requested_token_types_supported?.length === 1 &&
      meta.token_exchange_requested_token_types_supported[0] === AT,
    'requested token types are not exactly access_token',
  )
  return meta
})
if (!as) {
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(1)
}

const exchange = (clientId, secret, params) =>
  oauth.genericTokenEndpointRequest(
    as,
    { client_id: clientId },
    oauth.ClientSecretBasic(secret),
    TE,
    new URLSearchParams(params),
    insecure,
  )
const result = (clientId, response) =>
  oauth.processGenericTokenEndpointResponse(as, { client_id: clientId }, response)

async function refusedWith(response, code) {
  try {
    await result(agent.client_id, response)
  } catch (err) {
    expect(err instanceof oauth.ResponseBodyError, `${err?.name}: ${err?.message}`)
    expect(err.error === code, `error ${err.error} (${err.error_description}), expected ${code}`)
    return
  }
  throw new CheckFailed(`issued a token; expected ${code}`)
}

const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
const alice = await humanToken('alice@example.com', 120)
const aliceExp = jose.decodeJwt(alice).exp

const t1 = await check('agent_acts_for_human', async () => {
  const tok = await result(
    agent.client_id,
    await exchange(agent.client_id, agent.client_secret, {
      subject_token: alice,
      subject_token_type: JWT,
      resource: srvA.resource,
      scope: 'tools:read',
    }),
  )
  expect(tok.issued_token_type === AT, `issued_token_type ${tok.issued_token_type}`)
  expect(tok.token_type === 'bearer', `token_type ${tok.token_type}`)
  const { payload } = await jose.jwtVerify(tok.access_token, jwks, { issuer: ISSUER, audience: srvA.resource })
  expect(payload.sub === 'alice@example.com', `sub ${payload.sub}`)
  expect(payload.act?.sub === agent.client_id, `act ${JSON.stringify(payload.act)}`)
  expect(payload.exp <= aliceExp, `exp ${payload.exp} later than the subject's ${aliceExp}`)
  return tok.access_token
})

const t2 = t1 && (await check('mcp_server_to_downstream', async () => {
  const tok = await result(
    srvA.client_id,
    await exchange(srvA.client_id, srvA.client_secret, {
      subject_token: t1,
      subject_token_type: AT,
      resource: srvB.resource,
    }),
  )
  const { payload } = await jose.jwtVerify(tok.access_token, jwks, { issuer: ISSUER, audience: srvB.resource })
  const want = { sub: srvA.client_id, act: { sub: agent.client_id } }
  expect(JSON.stringify(payload.act) === JSON.stringify(want), `act ${JSON.stringify(payload.act)}`)
  expect(payload.exp <= aliceExp, `exp ${payload.exp} later than the first token's`)
  return tok.access_token
}))

if (t2) {
  await check('introspection_echoes_act', async () => {
    const response = await oauth.introspectionRequest(
      as,
      { client_id: srvB.client_id },
      oauth.ClientSecretBasic(srvB.client_secret),
      t2,
      insecure,
    )
    const body = await oauth.processIntrospectionResponse(as, { client_id: srvB.client_id }, response)
    expect(body.active === true, 'inactive')
    expect(body.act?.act?.sub === agent.client_id, `act ${JSON.stringify(body.act)}`)
  })
  await check('no_passthrough', async () =>
    refusedWith(
      await exchange(srvA.client_id, srvA.client_secret, {
        subject_token: t2,
        subject_token_type: AT,
        resource: srvB.resource,
      }),
      'invalid_request',
    ),
  )
}

const base = { subject_token: alice, subject_token_type: JWT, resource: srvA.resource }
await check('requested_token_type_refresh_refused', async () =>
  refusedWith(
    await exchange(agent.client_id, agent.client_secret, {
      ...base,
      requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token',
    }),
    'invalid_request',
  ),
)
await check('actor_token_type_alone_refused', async () =>
  refusedWith(
    await exchange(agent.client_id, agent.client_secret, { ...base, actor_token_type: AT }),
    'invalid_request',
  ),
)
await check('unknown_resource_invalid_target', async () =>
  refusedWith(
    await exchange(agent.client_id, agent.client_secret, { ...base, resource: 'https://unknown.example/mcp' }),
    'invalid_target',
  ),
)
await check('expired_subject_refused', async () =>
  refusedWith(
    await exchange(agent.client_id, agent.client_secret, { ...base, subject_token: await humanToken('alice', -60) }),
    'invalid_request',
  ),
)
await check('may_act_for_another_refused', async () =>
  refusedWith(
    await exchange(agent.client_id, agent.client_secret, {
      ...base,
      subject_token: await humanToken('alice', 60, { may_act: { sub: 'agt_someone_else' } }),
    }),
    'invalid_request',
  ),
)

console.error(`${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
