//! A reload (SIGHUP, `systemctl reload`): the config file read and checked again as at start;
//! a broken file is logged problem by problem and the config in force stays. Otherwise what
//! may change live (decided in `config::live`) is put in force here, each setting that needs
//! a restart is logged once, and calls in progress keep going on what they started with.
//!
//! The TLS certificate and key (and the extra CA file for carriers) are read again from their
//! files on every reload, so a certificate renewed in place is served to the next connection;
//! connections already up keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{pivot_secrets, source_limits, tts_engine, ServerHandle, TtsSpeaker};
use crate::callflow::modules::pivot::PivotServices;
use crate::config::live::{self, LiveConfig, NotApplied};
use crate::config::{Config, ConfigErrors};
use crate::logsafe::wire;
use crate::registrar::directory::Directory;
use crate::routing::Routes;
use crate::sip::endpoint::Endpoint;
use crate::sip::source::SourceGuard;
use crate::store::Store;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{} problem(s) in the config file", .0.0.len())]
    Invalid(ConfigErrors),
    #[error("the config check did not finish: {0}")]
    Check(#[from] tokio::task::JoinError),
}

/// What a reload changes, held by the server.
pub(super) struct Reloadable {
    pub(super) live: Arc<LiveConfig>,
    pub(super) sources: Arc<SourceGuard>,
    pub(super) tts: Arc<TtsSpeaker>,
    pub(super) pivot: Arc<PivotServices>,
    pub(super) directory: Arc<Directory>,
    pub(super) store: Store,
    pub(super) routes: Arc<Routes>,
    pub(super) endpoint: Arc<Endpoint>,
}

impl Reloadable {
    /// Puts `new` (checked) in force; returns the settings kept because they need a restart.
    async fn apply(&self, new: Config) -> Vec<NotApplied> {
        let old = self.live.get();
        let (new, kept) = live::apply(&old, new);
        // Devices first, so a phone of a new account can register once its realm is served.
        self.directory.reload_config(&old, &new);
        self.sources.set_limits(source_limits(&new));
        if new.tts != old.tts {
            self.tts.set(tts_engine(&new));
        }
        self.pivot.set_secrets(pivot_secrets(&new));
        self.reload_certificates(&new);
        let accounts_changed = new.accounts.len() != old.accounts.len()
            || new
                .accounts
                .iter()
                .zip(&old.accounts)
                .any(|(n, o)| n.id != o.id);
        let new = Arc::new(new);
        self.live.replace(new.clone());
        if accounts_changed {
            // A new account's API callflows and devices, kept in the store, come in as at
            // start.
            crate::api::load_callflows(&new, &self.store, &self.routes).await;
            crate::api::load_devices(&new, &self.store, &self.directory).await;
        }
        if let Ok(limit) = crate::fdlimit::limit_in_force() {
            if let Some(short) = crate::fdlimit::Budget::for_config(&new).check(limit) {
                tracing::warn!("reload: {short}");
            }
        }
        kept
    }
}

impl Reloadable {
    /// The TLS listeners' certificate and key, and the CA file carriers are checked against,
    /// read again (the config check has just read them too). A failure keeps the old ones.
    fn reload_certificates(&self, cfg: &Config) {
        let sip = &cfg.sip;
        let (Some(cert), Some(key)) = (&sip.tls_cert, &sip.tls_key) else {
            return;
        };
        if let Err(e) = self
            .endpoint
            .transport()
            .reload_tls(cert, key, sip.tls_ca_file.as_deref())
        {
            tracing::warn!("reload: TLS certificate not reloaded, the old one stays: {e}");
        }
    }
}

impl ServerHandle {
    /// Reads `path` again and puts what may change live in force. A file with problems
    /// changes nothing.
    pub async fn reload(&self, path: &Path) -> Result<Vec<NotApplied>, ReloadError> {
        self.reloadable.reload(path).await
    }

    /// Reloads `config` on every SIGHUP, logging the outcome; without a file (the embedded
    /// default) a SIGHUP is logged and ignored rather than ending the process.
    pub fn reload_on_hangup(&self, hangups: Option<Hangups>, config: Option<PathBuf>) {
        let Some(Hangups(mut hangups)) = hangups else {
            return;
        };
        let reloadable = self.reloadable.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match &config {
                    Some(path) => reloadable.reload_logged(path).await,
                    None => tracing::warn!("SIGHUP: no --config file to reload"),
                }
            }
        });
    }
}

/// SIGHUPs, caught from the moment this is made: made before the server starts, a SIGHUP
/// during start-up is a reload once it runs, not the end of the process.
pub struct Hangups(tokio::signal::unix::Signal);

impl Hangups {
    /// None (logged): no reloads.
    pub fn listen() -> Option<Hangups> {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(Hangups(s)),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, no reloads: {e}");
                None
            }
        }
    }
}

impl Reloadable {
    async fn reload(&self, path: &Path) -> Result<Vec<NotApplied>, ReloadError> {
        let p = path.to_path_buf();
        // The checks read the disk (media files, the TTS command).
        let new = tokio::task::spawn_blocking(move || crate::callflow::check::load(&p))
            .await?
            .map_err(ReloadError::Invalid)?;
        Ok(self.apply(new).await)
    }

    /// [`Reloadable::reload`], every outcome logged: each problem of a refused file, each
    /// setting kept until restart.
    async fn reload_logged(&self, path: &Path) {
        let file = path.display().to_string();
        let file = wire(&file);
        match self.reload(path).await {
            Ok(kept) => {
                for k in &kept {
                    tracing::warn!(
                        setting = k.key,
                        "reload: {} changed in the file, not applied until restart",
                        k.what
                    );
                }
                tracing::info!(%file, not_applied = kept.len(), "config reloaded");
            }
            Err(ReloadError::Invalid(errors)) => {
                for p in &errors.0 {
                    tracing::error!(%file, key = %wire(&p.key), "reload: {}", wire(&p.message));
                }
                tracing::error!(
                    %file,
                    problems = errors.0.len(),
                    "reload refused: the config in force stays"
                );
            }
            Err(e) => tracing::error!(%file, "reload refused: {e}"),
        }
    }
}
