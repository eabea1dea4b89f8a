//! Sign-in sessions of the pages and the sign-in rate limit (issue 14).
//!
//! `POST /auth/sign-in` with a valid operator token opens a session: a row in `sessions`
//! (`store/sessions.rs`) whose id is the SHA-256 of a random 32-byte secret, and the browser's
//! cookie holds that secret (base64url), never the token. The row names the token by its
//! SHA-256, so the auth middleware resolves a cookie to today's configuration of that token
//! (`OperatorTokens::by_hash`): a token removed from the configuration ends its sessions at the
//! next start. Sessions expire after `--session-ttl-ms`; sign-out deletes the row; expired rows
//! are refused at once and deleted by `run_pruner`.
//!
//! Sign-in attempts are limited per client address (the TCP peer; `X-Forwarded-For` is not
//! trusted): `SIGN_IN_PER_MINUTE` attempts per minute, all of them allowed in a burst, one
//! more every 6 s after that. IPv6 clients are keyed by their /64, which one client usually
//! holds whole.
use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use chrono::Utc;
use governor::{Quota, clock::Clock};
use rand::RngCore;
use tokio_util::sync::CancellationToken;

use crate::store::{SessionRecord, Store, StoreResult};
use domain::auth::{session_id, token_hash_hex};

/// The sign-in cookie over plain HTTP.
pub const SESSION_COOKIE: &str = "switchyard_session";
/// The sign-in cookie when the request came over HTTPS (`Secure`, no `Domain`, `Path=/`).
pub const SECURE_SESSION_COOKIE: &str = "__Host-switchyard_session";

/// Sign-in attempts one client address may make per minute (the burst too).
pub const SIGN_IN_PER_MINUTE: u32 = 10;

/// How often expired sessions are deleted and idle rate-limit entries forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Opens, resolves and revokes sign-in sessions, and limits sign-in attempts.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    ttl: Duration,
    limiter: Arc<Limiter>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish()
    }
}

impl Sessions {
    pub fn new(store: Store, ttl: Duration) -> Sessions {
        let per_minute = NonZeroU32::new(SIGN_IN_PER_MINUTE).expect("a positive limit");
        Sessions {
            store,
            ttl,
            limiter: Arc::new(Limiter::keyed(Quota::per_minute(per_minute))),
        }
    }

    /// How long a new session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `subject`, signed in with `token`; returns the cookie's secret.
    pub async fn open(&self, subject: &str, token: &str) -> StoreResult<String> {
        let mut bytes = [0u8; 32];
        // ThreadRng: a CSPRNG (ChaCha) seeded and periodically reseeded from the OS.
        rand::rng().fill_bytes(&mut bytes);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(12));
        self.store
            .insert_session(SessionRecord {
                id: session_id(&secret),
                subject: subject.to_string(),
                token_hash: token_hash_hex(token),
                created_at: now,
                expires_at: now + ttl,
            })
            .await?;
        Ok(secret)
    }

    /// The live session a cookie's secret opens: `None` when there is none, or it expired.
    pub async fn resolve(&self, secret: &str) -> StoreResult<Option<SessionRecord>> {
        if secret.is_empty() || secret.len() > 128 {
            return Ok(None);
        }
        Ok(self
            .store
            .get_session(&session_id(secret))
            .await?
            .filter(|s| s.expires_at > Utc::now()))
    }

    /// Ends the session of a cookie's secret; whether there was one.
    pub async fn revoke(&self, secret: &str) -> StoreResult<bool> {
        self.store.delete_session(&session_id(secret)).await
    }

    /// Counts one sign-in attempt of `client`; `Err(wait)` when it is over the limit.
    pub fn sign_in_attempt(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let key = rate_key(client);
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Every `PRUNE_EVERY` (and once at start): deletes expired sessions and forgets clients
    /// whose attempts are long past.
    pub async fn run_pruner(self, stop: CancellationToken) {
        loop {
            match self.store.delete_expired_sessions(Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sessions = n, "expired sign-in sessions deleted"),
                Err(e) => tracing::warn!(error = %e, "could not delete expired sessions"),
            }
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }
}

/// The rate-limit key of a client: its IPv4 address, or its IPv6 /64 (also the key of the
/// connection limits, `http::limits`).
pub(crate) fn rate_key(client: Option<IpAddr>) -> IpAddr {
    match client.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_keyed_by_address_and_ipv6_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(Some(a)), rate_key(Some(b)));
        assert_ne!(rate_key(Some(a)), rate_key(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            rate_key(Some(mapped)),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
