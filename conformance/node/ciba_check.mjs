// OpenID CIBA (poll mode) from oauth4webapi: a client that is not ours asks Mandate for a
// human's approval of one tool call and polls the token endpoint with the library's own
// backchannel grant functions. The human's decision is made in the browser by
// conformance/browser/approval_browser.py, which runs this script and waits for the line
// `ASKED <binding_message>` to find the request on /approvals, and `PENDING` (the first poll
// answered authorization_pending) to approve it.
//
// Environment: CONF_ISSUER, CONF_RESOURCE, CONF_AGENT_ID, CONF_AGENT_SECRET, CONF_MESSAGE.
import { isDeepStrictEqual } from 'node:util'
import * as oauth from 'oauth4webapi'

const { CONF_ISSUER, CONF_RESOURCE, CONF_AGENT_ID, CONF_AGENT_SECRET, CONF_MESSAGE } = process.env
const insecure = { [oauth.allowInsecureRequests]: true }
let failed = 0
const report = (ok, name, why = '') => {
  if (ok) console.log(`PASS node_ciba.${name}`)
  else {
    failed++
    console.log(`FAIL node_ciba.${name}: ${String(why).replace(/\s+/g, ' ').slice(0, 300)}`)
  }
}

const issuer = new URL(CONF_ISSUER)
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure }),
)
report(
  as.backchannel_authentication_endpoint === `${CONF_ISSUER}/bc-authorize` &&
    as.backchannel_token_delivery_modes_supported?.includes('poll'),
  'metadata',
  JSON.stringify(as),
)
const client = { client_id: CONF_AGENT_ID }
const auth = oauth.ClientSecretBasic(CONF_AGENT_SECRET)
const details = [
  { type: 'mcp_tool_call', tool: 'deploy', arguments: { service: 'api', version: 'v7' }, reason: 'oauth4webapi' },
]
const response = await oauth.backchannelAuthenticationRequest(
  as,
  client,
  auth,
  {
    scope: 'tools:deploy',
    resource: CONF_RESOURCE,
    authorization_details: JSON.stringify(details),
    binding_message: CONF_MESSAGE,
    acr_values: 'urn:mandate:acr:passkey-approval',
  },
  { ...insecure },
)
const started = await oauth.processBackchannelAuthenticationResponse(as, client, response)
report(typeof started.auth_req_id === 'string' && started.expires_in > 0, 'bc_authorize', JSON.stringify(started))
console.log(`ASKED ${CONF_MESSAGE}`)

let interval = started.interval ?? 5
let pending = 0
let result
const deadline = Date.now() + 90_000
while (Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, interval * 1000))
  const r = await oauth.backchannelAuthenticationGrantRequest(as, client, auth, started.auth_req_id, { ...insecure })
  try {
    result = await oauth.processBackchannelAuthenticationGrantResponse(as, client, r)
    break
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError && err.error === 'authorization_pending') {
      pending++
      if (pending === 1) console.log('PENDING')
      continue
    }
    if (err instanceof oauth.ResponseBodyError && err.error === 'slow_down') {
      interval += 5
      continue
    }
    report(false, 'poll', `${err.name}: ${err.message} ${err.error ?? ''}`)
    break
  }
}
report(pending >= 1, 'authorization_pending_while_waiting', `pending ${pending}`)
if (result) {
  const claims = JSON.parse(Buffer.from(result.access_token.split('.')[1], 'base64url').toString())
  report(
    result.token_type.toLowerCase() === 'bearer' &&
      isDeepStrictEqual(claims.authorization_details, details) &&
      claims.aud === CONF_RESOURCE &&
      claims.acr === 'urn:mandate:acr:passkey-approval',
    'token_carries_authorization_details',
    JSON.stringify(claims),
  )
  const again = await oauth.backchannelAuthenticationGrantRequest(as, client, auth, started.auth_req_id, { ...insecure })
  const body = await again.json()
  report(again.status === 400 && body.error === 'invalid_grant', 'second_redemption_refused', JSON.stringify(body))
}
process.exit(failed ? 1 : 0)
