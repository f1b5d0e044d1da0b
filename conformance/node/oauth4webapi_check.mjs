// oauth4webapi + jose against Mandate.
//
// Discovery (RFC 8414 and OIDC paths), client_credentials with ClientSecretBasic and
// PrivateKeyJwt, access-token validation with jose jwtVerify against the remote JWKS
// (and oauth4webapi's own RFC 9068 validateJwtAccessToken), private_key_jwt replay
// and the assertion rules Mandate documents.
//
// Environment: CONF_ISSUER, CONF_WORK (dir holding srv_a.json, agt_basic.json,
// agt_pkjwt.json, agent-private.jwk.json).
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

const SCOPE = 'tools:echo'
const srvA = readJson('srv_a.json')
const agtBasic = readJson('agt_basic.json')
const agtPkjwt = readJson('agt_pkjwt.json')
const privateJwk = readJson('agent-private.jwk.json')
const RESOURCE = srvA.resource
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
  if (err?.code) msg += ` [${err.code}]`
  if (err?.error) msg += ` error=${err.error}`
  if (err?.error_description) msg += ` (${err.error_description})`
  if (err?.cause?.body) msg += ` body=${JSON.stringify(err.cause.body)}`
  return msg
}

async function check(name, fn) {
  try {
    const value = await fn()
    passed++
    console.log(`PASS node.${name}`)
    return value ?? true
  } catch (err) {
    failed++
    if (!(err instanceof CheckFailed)) console.error(err)
    console.log(`FAIL node.${name}: ${oneLine(describe(err))}`)
    return undefined
  }
}
function notRun(names, because) {
  for (const name of names) {
    failed++
    console.log(`FAIL node.${name}: not run: ${because}`)
  }
}

// ---------------------------------------------------------------- discovery
const as = await check('discovery.oauth_authorization_server', async () => {
  const issuerUrl = new URL(ISSUER)
  const response = await oauth.discoveryRequest(issuerUrl, { algorithm: 'oauth2', ...insecure })
  const raw = await response.clone().json()
  const meta = await oauth.processDiscoveryResponse(issuerUrl, response)
  // oauth4webapi compares URL-normalised forms; the issuer must also be byte-exact.
  expect(raw.issuer === ISSUER, `issuer ${JSON.stringify(raw.issuer)} is not byte-exact ${JSON.stringify(ISSUER)}`)
  const want = {
    token_endpoint: `${ISSUER}/token`,
    jwks_uri: `${ISSUER}/jwks.json`,
    introspection_endpoint: `${ISSUER}/introspect`,
    revocation_endpoint: `${ISSUER}/revoke`,
  }
  for (const [k, v] of Object.entries(want)) expect(meta[k] === v, `${k} ${JSON.stringify(meta[k])}, expected ${v}`)
  expect(
    Array.isArray(meta.grant_types_supported) && meta.grant_types_supported.includes('client_credentials'),
    `grant_types_supported ${JSON.stringify(meta.grant_types_supported)}`,
  )
  for (const m of ['client_secret_basic', 'client_secret_post', 'private_key_jwt']) {
    expect(meta.token_endpoint_auth_methods_supported?.includes(m), `token_endpoint_auth_methods_supported lacks ${m}`)
  }
  expect(
    meta.token_endpoint_auth_signing_alg_values_supported?.includes('ES256'),
    `token_endpoint_auth_signing_alg_values_supported ${JSON.stringify(meta.token_endpoint_auth_signing_alg_values_supported)} lacks ES256`,
  )
  expect(Array.isArray(meta.scopes_supported), 'scopes_supported is not an array')
  return meta
})

await check('discovery.rfc8414_required_members', async () => {
  expect(as, 'no metadata')
  // RFC 8414 section 2: response_types_supported is REQUIRED (may be empty for a
  // client_credentials-only server).
  expect(Array.isArray(as.response_types_supported), `response_types_supported ${JSON.stringify(as.response_types_supported)}`)
})

await check('discovery.openid_configuration', async () => {
  const issuerUrl = new URL(ISSUER)
  const response = await oauth.discoveryRequest(issuerUrl, { algorithm: 'oidc', ...insecure })
  const meta = await oauth.processDiscoveryResponse(issuerUrl, response)
  expect(meta.issuer === ISSUER, `issuer ${JSON.stringify(meta.issuer)}`)
  expect(meta.token_endpoint === `${ISSUER}/token`, `token_endpoint ${meta.token_endpoint}`)
})

const JWKS = as ? jose.createRemoteJWKSet(new URL(as.jwks_uri)) : undefined

async function verifyAccessToken(token, clientId) {
  const { payload, protectedHeader } = await jose.jwtVerify(token, JWKS, {
    issuer: ISSUER,
    audience: RESOURCE,
    typ: 'at+jwt',
  })
  expect(protectedHeader.typ === 'at+jwt', `header typ ${JSON.stringify(protectedHeader.typ)}`)
  expect(protectedHeader.alg === 'ES256', `header alg ${protectedHeader.alg}, expected ES256 (default)`)
  expect(protectedHeader.kid, 'header has no kid')
  const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud]
  expect(aud.length === 1 && aud[0] === RESOURCE, `aud ${JSON.stringify(payload.aud)}, expected ${RESOURCE}`)
  const now = Math.floor(Date.now() / 1000)
  expect(typeof payload.exp === 'number' && payload.exp > now, `exp ${payload.exp} not in the future`)
  expect(payload.client_id === clientId, `client_id ${payload.client_id}, expected ${clientId}`)
  for (const c of ['sub', 'iat', 'jti']) expect(payload[c] !== undefined, `claim ${c} missing`)
  expect(payload.scope === SCOPE, `scope claim ${JSON.stringify(payload.scope)}`)
  return payload
}

async function expectTokenResponse(response, clientId) {
  const tok = await oauth.processClientCredentialsResponse(as, { client_id: clientId }, response)
  expect(tok.token_type === 'bearer', `token_type ${tok.token_type}`)
  expect(tok.scope === SCOPE, `scope ${JSON.stringify(tok.scope)}`)
  return tok
}

if (!as) {
  notRun(
    [
      'client_credentials.client_secret_basic',
      'jwt.client_secret_basic',
      'oauth4webapi.validateJwtAccessToken',
      'client_credentials.private_key_jwt',
      'jwt.private_key_jwt',
      'private_key_jwt.replay_rejected',
      'private_key_jwt.aud_token_endpoint_accepted',
      'private_key_jwt.missing_jti_rejected',
      'private_key_jwt.long_exp_rejected',
      'private_key_jwt.unknown_key_rejected',
    ],
    'discovery failed',
  )
} else {
  // ------------------------------------------------------ client_secret_basic
  const basicClient = { client_id: agtBasic.client_id }
  const basicTok = await check('client_credentials.client_secret_basic', async () => {
    const response = await oauth.clientCredentialsGrantRequest(
      as,
      basicClient,
      oauth.ClientSecretBasic(agtBasic.client_secret),
      new URLSearchParams({ resource: RESOURCE, scope: SCOPE }),
      insecure,
    )
    return expectTokenResponse(response, basicClient.client_id)
  })
  if (basicTok) {
    await check('jwt.client_secret_basic', () => verifyAccessToken(basicTok.access_token, agtBasic.client_id))
    await check('oauth4webapi.validateJwtAccessToken', async () => {
      const request = new Request(RESOURCE, { headers: { authorization: `Bearer ${basicTok.access_token}` } })
      const claims = await oauth.validateJwtAccessToken(as, request, RESOURCE, insecure)
      expect(claims.client_id === agtBasic.client_id, `client_id ${claims.client_id}`)
    })
  } else {
    notRun(['jwt.client_secret_basic', 'oauth4webapi.validateJwtAccessToken'], 'no token')
  }

  // ---------------------------------------------------------- private_key_jwt
  const { kid, ...jwk } = privateJwk
  const privateKey = await jose.importJWK(jwk, 'ES256')
  const pkClient = { client_id: agtPkjwt.client_id }
  let captured
  const recordingFetch = (url, init) => {
    captured = { url, body: String(init.body), headers: init.headers }
    return fetch(url, init)
  }
  const pkTok = await check('client_credentials.private_key_jwt', async () => {
    const response = await oauth.clientCredentialsGrantRequest(
      as,
      pkClient,
      oauth.PrivateKeyJwt({ key: privateKey, kid }),
      new URLSearchParams({ resource: RESOURCE, scope: SCOPE }),
      { ...insecure, [oauth.customFetch]: recordingFetch },
    )
    return expectTokenResponse(response, pkClient.client_id)
  })
  if (pkTok) {
    await check('jwt.private_key_jwt', () => verifyAccessToken(pkTok.access_token, agtPkjwt.client_id))
  } else {
    notRun(['jwt.private_key_jwt'], 'no token')
  }

  const postForm = (body) =>
    fetch(as.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body,
    })
  async function expectInvalidClient(response) {
    const text = await response.text()
    let body
    try {
      body = JSON.parse(text)
    } catch {
      body = { raw: text.slice(0, 200) }
    }
    expect(
      response.status === 401 && body.error === 'invalid_client',
      `HTTP ${response.status} ${JSON.stringify(body)}, expected 401 invalid_client`,
    )
  }

  await check('private_key_jwt.replay_rejected', async () => {
    expect(pkTok && captured, 'no successful private_key_jwt request to replay')
    const sent = new URLSearchParams(captured.body)
    expect(sent.get('client_assertion'), 'captured request has no client_assertion')
    await expectInvalidClient(await postForm(captured.body))
  })

  // Hand-made assertions (jose SignJWT) for the rules Mandate documents.
  const now = () => Math.floor(Date.now() / 1000)
  async function assertion({ aud = ISSUER, jti = crypto.randomUUID(), exp = now() + 60, key = privateKey, keyId = kid } = {}) {
    const claims = { iss: agtPkjwt.client_id, sub: agtPkjwt.client_id, aud, iat: now() }
    if (jti !== null) claims.jti = jti
    return new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: keyId, typ: 'JWT' })
      .setExpirationTime(exp)
      .sign(key)
  }
  const pkForm = (clientAssertion) =>
    new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion,
      resource: RESOURCE,
      scope: SCOPE,
    }).toString()

  await check('private_key_jwt.aud_token_endpoint_accepted', async () => {
    const response = await postForm(pkForm(await assertion({ aud: as.token_endpoint })))
    const body = await response.json().catch(() => ({}))
    expect(response.status === 200 && body.access_token, `HTTP ${response.status} ${JSON.stringify(body)}`)
  })
  await check('private_key_jwt.missing_jti_rejected', async () => {
    await expectInvalidClient(await postForm(pkForm(await assertion({ jti: null }))))
  })
  await check('private_key_jwt.long_exp_rejected', async () => {
    await expectInvalidClient(await postForm(pkForm(await assertion({ exp: now() + 3600 }))))
  })
  await check('private_key_jwt.unknown_key_rejected', async () => {
    const other = await jose.generateKeyPair('ES256')
    await expectInvalidClient(await postForm(pkForm(await assertion({ key: other.privateKey }))))
  })
}

process.exitCode = failed ? 1 : 0
