//! One file per grant type.
pub mod authorization_code;
pub mod ciba;
pub mod client_credentials;
pub mod jwt_bearer;
pub mod refresh_token;
pub mod token_exchange;
