//! `grant_type=urn:openid:params:grant-type:ciba` (OpenID CIBA §10, poll mode): the agent
//! polls with its `auth_req_id` until a human decided (src/approvals/), then receives one
//! short-lived token for the approved call: `authorization_details` (RFC 9396), `acr`,
//! `auth_time` and the approver.
use crate::app::App;
use crate::approvals::entity::approval_request as row;
use crate::approvals::{ACR, SLOW_DOWN_STEP, Status};
use crate::audit::{Actor, ActorKind, Event, Seen, kinds};
use crate::oauth::{OAuthError, Params, TokenResponse, scopes};
use crate::policy::{Facts, Outcome};
use crate::tokens::{AccessClaims, ApprovalClaims};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use std::net::IpAddr;

pub const GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";

fn store_err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::ServerError(e.to_string().into())
}

impl App {
    /// `/token` with the CIBA grant.
    pub async fn ciba_token(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        p: &Params,
        seen: &mut Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let registry = self.registry();
        let agent = self
            .authenticate_agent(&registry, now, peer, authorization, p, seen)
            .await?;
        let id = p.require("auth_req_id")?;
        let hash = crate::secrets::hex(&crate::secrets::hash(id));
        let r = row::Entity::find()
            .filter(row::Column::AuthReqHash.eq(&hash))
            .one(&self.store.db)
            .await
            .map_err(store_err)?
            // Another client's id says no more than an unknown one.
            .filter(|r| r.agent_id == agent.id)
            .ok_or_else(|| OAuthError::InvalidGrant("unknown auth_req_id".into()))?;
        seen.resource = Some(r.resource.clone());
        seen.asked_scope = Some(r.scope.clone());
        let status = Status::parse(&r.status)
            .ok_or_else(|| OAuthError::ServerError("unknown approval status".into()))?;
        match status {
            Status::Redeemed => {
                return Err(OAuthError::InvalidGrant(
                    "this approval was already redeemed".into(),
                ));
            }
            Status::Expired => return Err(OAuthError::ExpiredToken),
            Status::Denied => {
                return Err(OAuthError::AccessDenied(r.deny_reason.clone().map_or_else(
                    || "the approver denied the request".into(),
                    Into::into,
                )));
            }
            _ if r.expires_at <= now => {
                row::Entity::update_many()
                    .col_expr(row::Column::Status, Expr::value(Status::Expired.as_str()))
                    .filter(row::Column::Id.eq(&r.id))
                    .filter(row::Column::Status.eq(Status::Pending.as_str()))
                    .exec(&self.store.db)
                    .await
                    .map_err(store_err)?;
                return Err(OAuthError::ExpiredToken);
            }
            Status::Pending => {
                let too_fast = r
                    .last_polled_at
                    .is_some_and(|last| now - last < r.poll_interval);
                let interval = if too_fast {
                    r.poll_interval + SLOW_DOWN_STEP
                } else {
                    r.poll_interval
                };
                row::Entity::update_many()
                    .col_expr(row::Column::LastPolledAt, Expr::value(now))
                    .col_expr(row::Column::PollInterval, Expr::value(interval))
                    .filter(row::Column::Id.eq(&r.id))
                    .exec(&self.store.db)
                    .await
                    .map_err(store_err)?;
                return Err(if too_fast {
                    OAuthError::SlowDown
                } else {
                    OAuthError::AuthorizationPending
                });
            }
            Status::Approved => {}
        }
        let approver_id = r
            .decided_by
            .clone()
            .ok_or_else(|| OAuthError::ServerError("approved without an approver".into()))?;
        let approver = self
            .person(&approver_id)
            .await?
            .ok_or_else(|| OAuthError::AccessDenied("the approver's account is gone".into()))?;
        if !self.backend.healthy() {
            return Err(OAuthError::TemporarilyUnavailable(
                "the revocation store is unreachable".into(),
            ));
        }
        // Policy again, now with the approval in the context.
        let server = registry
            .server_by_resource(&r.resource)
            .cloned()
            .ok_or_else(|| OAuthError::AccessDenied("the MCP server is gone".into()))?;
        if agent.status != crate::agents::AgentStatus::Active {
            return Err(OAuthError::UnauthorizedClient(
                "the agent is suspended".into(),
            ));
        }
        let mut facts =
            Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), Some(peer));
        facts.approved = true;
        facts.approver = Some(crate::policy::HumanFacts::new(
            approver.email.clone(),
            approver.roles.clone(),
        ));
        let engine = &registry.policy;
        let features = engine.features(&facts);
        let granted = scopes::narrow(Some(&r.scope), &agent.scope_ceiling, &server, |tool| {
            engine
                .decide(&agent, &server, tool, &features, &facts)
                .decision
                == Outcome::Permit
        })?;
        if granted.join(" ") != r.scope {
            return Err(OAuthError::AccessDenied(
                "policy no longer permits this call".into(),
            ));
        }
        if self
            .replica
            .agent_cutoff(&agent.id)
            .is_some_and(|cut| cut >= now)
        {
            return Err(OAuthError::TemporarilyUnavailable(
                "the agent was revoked this second; retry shortly".into(),
            ));
        }
        let session = self.session_for(&agent, now).await.map_err(|_| {
            OAuthError::TemporarilyUnavailable("the session store is unreachable".into())
        })?;
        // Single use: only one poll turns approved into redeemed.
        let done = row::Entity::update_many()
            .col_expr(row::Column::Status, Expr::value(Status::Redeemed.as_str()))
            .filter(row::Column::Id.eq(&r.id))
            .filter(row::Column::Status.eq(Status::Approved.as_str()))
            .exec(&self.store.db)
            .await
            .map_err(store_err)?;
        if done.rows_affected != 1 {
            return Err(OAuthError::InvalidGrant(
                "this approval was already redeemed".into(),
            ));
        }
        let details: serde_json::Value = serde_json::from_str(&r.authorization_details)
            .map_err(|e| OAuthError::ServerError(format!("stored details: {e}").into()))?;
        let ttl = agent
            .token_ttl_cap
            .map_or(self.config.approval_token_ttl_secs, |cap| {
                cap.min(self.config.approval_token_ttl_secs)
            });
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: agent.id.clone(),
            aud: server.resource.clone(),
            client_id: agent.id.clone(),
            scope: r.scope.clone(),
            iat: now,
            nbf: now,
            exp: (now + ttl).min(session.rec.expires_at),
            jti: crate::secrets::hex(&crate::secrets::random_bytes::<16>()),
            sid: Some(session.rec.sid.clone()),
            env: Some(agent.environment.clone()),
            act: None,
            approval: Some(Box::new(ApprovalClaims {
                authorization_details: details,
                acr: ACR.into(),
                auth_time: r.decided_at.unwrap_or(now),
                approver: approver.id.clone(),
            })),
            person: None,
        };
        let key = registry
            .keys
            .active(now)
            .ok_or_else(|| OAuthError::TemporarilyUnavailable("no active signing key".into()))?;
        let token = key
            .sign_jwt(&claims)
            .ok_or_else(|| OAuthError::ServerError("signing failed".into()))?;
        seen.issued(&claims, Some(server.clone()));
        let mut ev = Event::new(
            kinds::APPROVAL_REDEEMED,
            now,
            Actor::new(ActorKind::Agent, &agent.id),
        )
        .subject(&r.id)
        .agent(&agent.id)
        .server(&server.id);
        ev.details
            .push(("jti", crate::audit::Detail::Str(claims.jti.clone())));
        if self.audit.record(ev).await.is_err() {
            tracing::warn!(request = %r.id, "audit unavailable for approval.redeemed");
        }
        self.approvals.changed();
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: claims.exp - now,
            scope: claims.scope,
            step_up_scope: None,
            issued_token_type: None,
            refresh_token: None,
            grant_type: GRANT_TYPE,
        })
    }
}
