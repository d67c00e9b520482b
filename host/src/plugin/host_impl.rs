//! The store data of a plugin instance and the `host` interface it imports.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{
    Contact, CredentialsImports, DigestImports, DigestVerdictWit, GuestMediaChoice, GuestRelay,
    HostImports, KeysImports, Level, MediaImports, RegistrarImports, SipTypesImports, TypesImports,
};
use super::limits::{Deadline, MemoryCap};
use super::output::{GuestOutput, LineLevel, LogSink, Stream};
use super::registrar_view::RegistrarView;
use crate::auth::guess_guard::{BanStarted, GuessGuard};
use crate::auth::{DigestVerdict, NonceKey, Secret, digest_param};
use crate::core::Myself;
use crate::metrics::Metrics;

/// What every instance of one plugin shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub(crate) name: String,
    /// The plugin's `config` table as JSON.
    pub(crate) config_json: String,
    pub(crate) myself: Arc<Myself>,
    /// What `lookup` reads.
    pub(crate) registrar: Arc<RegistrarView>,
    /// Where outbound HTTP may go.
    pub(crate) outbound: super::outbound::OutboundHooks,
    /// Makes and checks Digest nonces (the same key as the SIP challenges).
    pub(crate) nonce: NonceKey,
    /// Refuses the credentials of password guessers (server-wide).
    pub(crate) guess_guard: Arc<GuessGuard>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// The keys of `[keys]` the plugin is granted (`plugins.NAME.keys`).
    pub(crate) keys: crate::keys::KeyRing,
    /// The user store `check-password` and `verify-stored` read.
    pub(crate) users: Arc<crate::users::UserStore>,
}

/// The data of a plugin's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: wasmtime_wasi_http::WasiHttpCtx,
    outbound: super::outbound::OutboundHooks,
    pub(crate) memory: MemoryCap,
    pub(crate) deadline: Deadline,
    shared: Arc<PluginShared>,
    /// The `log` import and stdout/stderr, under one quota.
    pub(crate) output: Arc<LogSink>,
    /// What the `digest` imports need of the request being decided, during
    /// `on-sip-request` and `on-http-request`.
    pub(crate) digest_request: Option<super::sip_router::DigestFacts>,
    /// The `media.choose` of the `on-sip-request` call under way.
    pub(crate) media_choice: Option<crate::media::Choice>,
}

impl HostState {
    pub(crate) fn new(shared: Arc<PluginShared>, memory_limit: usize) -> Self {
        // No preopened directories, no environment, no arguments, stdin closed,
        // stdout/stderr to the log, and no network at all.
        let output = LogSink::new(&shared.name);
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(output.clone(), Stream::Stdout))
            .stderr(GuestOutput::new(output.clone(), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            outbound: shared.outbound.clone(),
            memory: MemoryCap::new(memory_limit),
            deadline: Deadline::default(),
            shared,
            output,
            digest_request: None,
            media_choice: None,
        }
    }

    /// Prepares for a call that must end by `at`.
    pub(crate) fn begin_call(&mut self, at: std::time::Instant) {
        self.deadline = Deadline {
            at: Some(at),
            expired: false,
        };
        self.output.begin_call();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl TypesImports for HostState {}

impl KeysImports for HostState {
    fn hmac_sign(&mut self, key: String, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.shared.keys.sign(&key, &data).map(Vec::from)
    }

    fn hmac_verify(&mut self, key: String, data: Vec<u8>, mac: Vec<u8>) -> bool {
        self.shared.keys.verify(&key, &data, &mac)
    }
}

impl HostState {
    /// The username of the request's credentials for `realm`.
    fn credentials_user(&self, realm: &str) -> Option<String> {
        let call = self.digest_request.as_ref()?;
        call.credentials
            .iter()
            .find(|c| digest_param(c, "realm").as_deref() == Some(realm))
            .and_then(|c| digest_param(c, "username"))
    }

    /// Counts a failed guess of `user`'s password from `peer`, logging the bans it
    /// starts.
    fn count_failure(&self, peer: std::net::IpAddr, user: &str) {
        let guard = &self.shared.guess_guard;
        self.shared.metrics.digest_failure();
        for ban in guard.failed(peer, user, std::time::Instant::now()) {
            self.shared.metrics.digest_ban();
            let limits = guard.limits();
            match ban {
                BanStarted::User(addr, user) => tracing::warn!(
                    %addr, %user,
                    "{} failed Digest responses for this user from this address within {:?}: its credentials from there are refused for {:?}",
                    limits.per_user, limits.window, limits.ban
                ),
                BanStarted::Address(addr) => tracing::warn!(
                    %addr,
                    "{} failed Digest responses from this address within {:?}: all its credentials are refused for {:?}",
                    limits.per_address, limits.window, limits.ban
                ),
            }
        }
    }

    /// Checks the request's credentials for `realm` against `secret`, with the
    /// password-guessing limits (a banned source is refused unchecked; a wrong answer
    /// counts once per request).
    fn verify_digest(&mut self, realm: &str, secret: Secret<'_>) -> DigestVerdictWit {
        let user = self.credentials_user(realm);
        let Some(call) = self.digest_request.as_ref() else {
            return DigestVerdictWit::Missing;
        };
        let counted = call.peer.zip(user);
        let guard = &self.shared.guess_guard;
        if let Some((peer, user)) = &counted
            && guard.refused(*peer, user, std::time::Instant::now())
        {
            // A banned source: the answer of a wrong password, without checking it.
            self.shared.metrics.digest_refused();
            return DigestVerdictWit::Invalid;
        }
        let request = crate::auth::DigestRequest {
            method: &call.method,
            uri: &call.uri,
            peer: call.peer,
            txn: &call.txn,
        };
        let verdict = self.shared.nonce.verify_with(
            call.credentials.iter().map(String::as_str),
            &request,
            realm,
            secret,
            super::sip_router::unix_now(),
            super::sip_router::NONCE_MAX_AGE_SECS,
        );
        if verdict != DigestVerdict::Valid {
            tracing::debug!(
                ?verdict,
                uri = %call.uri,
                credentials = ?call.credentials,
                "Digest credentials not accepted"
            );
        }
        match (&verdict, counted) {
            (DigestVerdict::Invalid, Some((peer, user))) => {
                let call = self.digest_request.as_mut().expect("checked above");
                if !call.failure_counted {
                    call.failure_counted = true;
                    self.count_failure(peer, &user);
                }
            }
            (DigestVerdict::Valid, Some((peer, user))) => guard.succeeded(peer, &user),
            _ => {}
        }
        match verdict {
            DigestVerdict::Valid => DigestVerdictWit::Valid,
            DigestVerdict::Stale => DigestVerdictWit::Stale,
            DigestVerdict::Invalid | DigestVerdict::Unproven => DigestVerdictWit::Invalid,
            DigestVerdict::Missing => DigestVerdictWit::Missing,
        }
    }
}

impl DigestImports for HostState {
    fn username(&mut self, realm: String) -> Option<String> {
        self.credentials_user(&realm)
    }

    fn verify(&mut self, realm: String, password: String) -> DigestVerdictWit {
        self.verify_digest(&realm, Secret::Password(&password))
    }

    fn proven_user(&mut self) -> Option<String> {
        self.digest_request.as_ref()?.proven_user.clone()
    }

    fn verify_stored(&mut self, realm: String) -> DigestVerdictWit {
        let Some(user) = self.credentials_user(&realm) else {
            return DigestVerdictWit::Missing;
        };
        match self.shared.users.lookup(&realm, &user) {
            Some(ha1) => self.verify_digest(
                &realm,
                Secret::Ha1 {
                    md5: &ha1.md5,
                    sha256: ha1.sha256.as_deref(),
                },
            ),
            // No such user: checked against a random secret of this process (the same
            // work as for a known user), and never valid: an unknown name answers as
            // a wrong password does, and counts as a guess.
            None => {
                let ha1 = unknown_user_ha1();
                match self.verify_digest(
                    &realm,
                    Secret::Ha1 {
                        md5: ha1,
                        sha256: Some(ha1),
                    },
                ) {
                    DigestVerdictWit::Valid => DigestVerdictWit::Invalid,
                    other => other,
                }
            }
        }
    }
}

/// What an unknown user's response is checked against: 32 random bytes in hex, made
/// once per process (no client can compute a response to it).
fn unknown_user_ha1() -> &'static str {
    static HA1: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HA1.get_or_init(|| {
        let mut r = [0u8; 32];
        // Without randomness the digests of a password no one has: still unknown.
        let _ = getrandom::fill(&mut r);
        crate::hex::hex(&r)
    })
}

impl CredentialsImports for HostState {
    fn has_users(&mut self, realm: String) -> bool {
        self.shared.users.has_users(&realm)
    }

    fn check_password(&mut self, realm: String, user: String, password: String) -> bool {
        let peer = self.digest_request.as_ref().and_then(|c| c.peer);
        let guard = &self.shared.guess_guard;
        if let Some(peer) = peer
            && guard.refused(peer, &user, std::time::Instant::now())
        {
            self.shared.metrics.digest_refused();
            return false;
        }
        let stored = self.shared.users.lookup(&realm, &user);
        // An unknown user costs the same hashing as a known one.
        let given = crate::users::Ha1::of(&user, &realm, &password);
        let right = stored.is_some_and(|h| h.matches_digests(&given));
        if let Some(peer) = peer {
            if right {
                guard.succeeded(peer, &user);
            } else {
                self.count_failure(peer, &user);
            }
        }
        right
    }
}

impl SipTypesImports for HostState {}

impl MediaImports for HostState {
    fn choose(&mut self, choice: GuestMediaChoice) -> Result<(), String> {
        let invite = self
            .digest_request
            .as_ref()
            .is_some_and(|r| r.method == "INVITE");
        if !invite {
            return Err("no INVITE is being decided: a media choice is made in \
                        on-sip-request for a new call"
                .into());
        }
        for (side, flags) in [
            ("toward-webrtc", &choice.toward_webrtc),
            ("toward-plain", &choice.toward_plain),
        ] {
            if flags.len() > crate::media::Choice::MAX_FLAGS {
                return Err(format!(
                    "{side}: {} flags, at most {}",
                    flags.len(),
                    crate::media::Choice::MAX_FLAGS
                ));
            }
            if let Some(bad) = flags.iter().find(|f| !crate::media::Choice::is_flag(f)) {
                return Err(format!(
                    "{side}: {bad:?} is not a flag (letters, digits and -_./=, 64 bytes at most)"
                ));
            }
        }
        self.media_choice = Some(crate::media::Choice {
            relay: match choice.relay {
                GuestRelay::Configured => None,
                GuestRelay::Relay => Some(true),
                GuestRelay::Direct => Some(false),
            },
            toward_webrtc: choice.toward_webrtc,
            toward_plain: choice.toward_plain,
        });
        Ok(())
    }
}

impl RegistrarImports for HostState {
    /// Asynchronous: in a cluster it asks the store (within `cluster.timeout`).
    async fn lookup(&mut self, aor: String) -> Vec<Contact> {
        self.shared.registrar.lookup_everywhere(&aor).await
    }
}

impl HostImports for HostState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => LineLevel::Trace,
            Level::Debug => LineLevel::Debug,
            Level::Info => LineLevel::Info,
            Level::Warn => LineLevel::Warn,
            Level::Error => LineLevel::Error,
        };
        self.output.log(level, &message);
    }

    fn is_myself(&mut self, host: String) -> bool {
        self.shared.myself.is_myself(&host)
    }

    fn plugin_config(&mut self) -> String {
        self.shared.config_json.clone()
    }
}
