//! Consents: what a person let an MCP client do on an MCP server. Remembered per person,
//! client and server; revoking one ends the grants (refresh families, sessions) made under it.
use super::store::{ClientStore, consent};
use crate::app::App;
use crate::audit::{Actor, kinds};
use crate::registry::admin::AdminError;

impl App {
    /// Live consents, of one person or of everyone.
    pub async fn list_consents(
        &self,
        human: Option<&str>,
    ) -> Result<Vec<consent::Model>, AdminError> {
        Ok(ClientStore(&self.store).list_consents(human).await?)
    }

    /// Revokes a consent and every grant made under it (the client must ask the person again).
    pub async fn revoke_consent(&self, by: Actor, id: &str) -> Result<consent::Model, AdminError> {
        let now = self.clock.now();
        let store = ClientStore(&self.store);
        let c = store
            .revoke_consent(id, now)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("consent {id}")))?;
        for fam in store
            .families(
                Some(&c.client_id),
                Some(&c.human_id),
                Some(&c.resource),
                now,
            )
            .await?
        {
            self.revoke_family(&fam, by.clone()).await;
        }
        let ev = self
            .audit
            .trail(by)
            .event(kinds::CONSENT_REVOKED, now)
            .subject(c.id.clone())
            .action("revoke_consent")
            .detail_str("client_id", c.client_id.clone())
            .detail_str("human", c.human_id.clone())
            .detail_str("resource", c.resource.clone());
        self.audit
            .record(ev)
            .await
            .map_err(|_| AdminError::Unavailable)?;
        Ok(c)
    }

    /// Ends every grant of a registered client (on its deletion).
    pub async fn revoke_client_grants(&self, by: Actor, client_id: &str) -> Result<(), AdminError> {
        let now = self.clock.now();
        let store = ClientStore(&self.store);
        for fam in store.families(Some(client_id), None, None, now).await? {
            self.revoke_family(&fam, by.clone()).await;
        }
        for c in store.list_consents(None).await? {
            if c.client_id == client_id {
                store.revoke_consent(&c.id, now).await?;
            }
        }
        Ok(())
    }
}
