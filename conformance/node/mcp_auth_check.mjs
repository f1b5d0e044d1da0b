// The MCP TypeScript SDK's `auth()` flow (authorization code + PKCE, for a person) against
// mcp_server.py, authorised by a Mandate running with `dev_auto_approve_email`.
//
// Usage: node mcp_auth_check.mjs MCP_PORT
//
// `auth()` discovers the protected resource metadata and Mandate's AS metadata, registers a
// public native client (DCR), and asks the provider to redirect: the scripted redirect handler
// fetches /authorize without following the redirect (Mandate signs the development person in
// and approves) and reads code, state and iss from the Location. A second `auth()` call
// exchanges the code (PKCE, resource); then a Client lists tools and calls `echo` over
// Streamable HTTP with the tokens, and a bad redirect URI is shown an error page, not sent.
//
// Environment: CONF_ISSUER, CONF_WORK (srv_a.json for this MCP server).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { auth } from '@modelcontextprotocol/sdk/client/auth.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'

const ISSUER = process.env.CONF_ISSUER
const WORK = process.env.CONF_WORK
const PORT = process.argv[2]
if (!ISSUER || !WORK || !PORT) {
  console.error('CONF_ISSUER, CONF_WORK and the MCP port must be given')
  process.exit(2)
}
const srv = JSON.parse(readFileSync(join(WORK, 'srv_a.json'), 'utf8'))
const MCP_URL = `http://127.0.0.1:${PORT}/mcp`
const REDIRECT = 'http://127.0.0.1:65011/callback'

let failed = 0
class CheckFailed extends Error {}
const expect = (cond, reason) => {
  if (!cond) throw new CheckFailed(reason)
}
const oneLine = (s) => String(s).replace(/\s+/g, ' ').slice(0, 400)
async function check(name, fn) {
  try {
    const value = await fn()
    console.log(`PASS ts_sdk.${name}`)
    return value ?? true
  } catch (err) {
    failed++
    if (!(err instanceof CheckFailed)) console.error(err)
    console.log(`FAIL ts_sdk.${name}: ${oneLine(err?.message ?? err)}`)
    return undefined
  }
}

class ScriptedProvider {
  constructor() {
    this.info = undefined
    this.saved = undefined
    this.verifier = undefined
    this.redirect = undefined
  }
  get redirectUrl() {
    return REDIRECT
  }
  get clientMetadata() {
    return {
      client_name: 'mandate-conformance-ts-sdk',
      redirect_uris: [REDIRECT],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      scope: 'tools:echo',
    }
  }
  clientInformation() {
    return this.info
  }
  saveClientInformation(info) {
    this.info = info
  }
  tokens() {
    return this.saved
  }
  saveTokens(tokens) {
    this.saved = tokens
  }
  saveCodeVerifier(v) {
    this.verifier = v
  }
  codeVerifier() {
    return this.verifier
  }
  // The scripted "browser": one request, no redirect followed.
  async redirectToAuthorization(url) {
    const resp = await fetch(url, { redirect: 'manual' })
    this.redirect = { url: String(url), status: resp.status, location: resp.headers.get('location') }
  }
}

const provider = new ScriptedProvider()

const first = await check('auth_redirects_after_registration', async () => {
  const result = await auth(provider, { serverUrl: MCP_URL })
  expect(result === 'REDIRECT', `auth() returned ${result}`)
  expect(provider.info?.client_id?.startsWith('mcl_'), `client ${JSON.stringify(provider.info)}`)
  const asked = new URL(provider.redirect.url).searchParams
  expect(asked.get('code_challenge_method') === 'S256', 'no S256 challenge')
  expect(asked.get('resource') === srv.resource, `resource ${asked.get('resource')}`)
  expect(provider.redirect.status === 302, `authorize answered ${provider.redirect.status}`)
  const loc = new URL(provider.redirect.location)
  expect(loc.href.startsWith(REDIRECT), `Location ${loc.href}`)
  expect(loc.searchParams.get('iss') === ISSUER, `iss ${loc.searchParams.get('iss')}`)
  expect(loc.searchParams.get('state') === asked.get('state'), 'state not echoed')
  return loc.searchParams.get('code')
})

const authorized = first
  ? await check('auth_exchanges_the_code', async () => {
      const result = await auth(provider, { serverUrl: MCP_URL, authorizationCode: first })
      expect(result === 'AUTHORIZED', `auth() returned ${result}`)
      expect(provider.saved?.access_token, 'no access token')
      expect(provider.saved?.refresh_token?.startsWith('mnd_rt_'), 'no refresh token')
    })
  : undefined

if (authorized) {
  await check('client_lists_tools_and_calls_echo', async () => {
    const client = new Client({ name: 'mandate-conformance-ts', version: '0' })
    await client.connect(new StreamableHTTPClientTransport(new URL(MCP_URL), { authProvider: provider }))
    const tools = await client.listTools()
    expect(JSON.stringify(tools.tools.map((t) => t.name)) === '["echo"]', `tools ${JSON.stringify(tools)}`)
    const out = await client.callTool({ name: 'echo', arguments: { text: 'hi from the TS SDK' } })
    const text = out.content.map((c) => c.text ?? '').join('')
    expect(text === 'hi from the TS SDK', `echo returned ${text}`)
    await client.close()
  })
  await check('auth_refreshes_with_rotation', async () => {
    const before = provider.saved.refresh_token
    // Expire the access token locally: auth() refreshes instead of redirecting.
    provider.saved = { ...provider.saved, access_token: 'expired' }
    const result = await auth(provider, { serverUrl: MCP_URL })
    expect(result === 'AUTHORIZED', `auth() returned ${result}`)
    expect(provider.saved.refresh_token && provider.saved.refresh_token !== before, 'not rotated')
  })
} else {
  failed++
  console.log('FAIL ts_sdk.client_lists_tools_and_calls_echo: not run: no tokens')
}

await check('unregistered_redirect_is_not_followed', async () => {
  const u = new URL(`${ISSUER}/authorize`)
  u.search = new URLSearchParams({
    response_type: 'code',
    client_id: provider.info?.client_id ?? 'mcl_unknown',
    redirect_uri: 'https://evil.example/callback',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
    state: 'x',
  }).toString()
  const resp = await fetch(u, { redirect: 'manual' })
  expect(resp.status === 400 && !resp.headers.get('location'), `HTTP ${resp.status} ${resp.headers.get('location')}`)
})

process.exitCode = failed ? 1 : 0
