//! The prompt library: play ids resolved to files in the media dir or to the prompts built
//! into the binary, each decoded once and cached. Apart from decoding, which it only calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Prompt, PromptError};

/// The prompts compiled into the binary, so `pivotd` runs from any folder.
pub(super) const EMBEDDED: &[(&str, &[u8])] = &[
    ("welcome.wav", include_bytes!("../../../media/welcome.wav")),
    ("error.wav", include_bytes!("../../../media/error.wav")),
    (
        "tone-1khz.wav",
        include_bytes!("../../../media/tone-1khz.wav"),
    ),
    ("digit-0.wav", include_bytes!("../../../media/digit-0.wav")),
    ("digit-1.wav", include_bytes!("../../../media/digit-1.wav")),
    ("digit-2.wav", include_bytes!("../../../media/digit-2.wav")),
    ("digit-3.wav", include_bytes!("../../../media/digit-3.wav")),
    ("digit-4.wav", include_bytes!("../../../media/digit-4.wav")),
    ("digit-5.wav", include_bytes!("../../../media/digit-5.wav")),
    ("digit-6.wav", include_bytes!("../../../media/digit-6.wav")),
    ("digit-7.wav", include_bytes!("../../../media/digit-7.wav")),
    ("digit-8.wav", include_bytes!("../../../media/digit-8.wav")),
    ("digit-9.wav", include_bytes!("../../../media/digit-9.wav")),
];

/// Where a prompt id resolved to.
enum Source {
    File(PathBuf),
    Embedded(&'static str, &'static [u8]),
}

impl Source {
    fn cache_key(&self) -> String {
        match self {
            Source::File(p) => format!("file:{}", p.display()),
            Source::Embedded(n, _) => format!("embedded:{n}"),
        }
    }
}

/// Resolves play ids to prompts: files in the media dir (never outside it: no `..`, no absolute
/// paths), then the prompts compiled into the binary; each decoded once and cached.
///
/// The cache is never invalidated: a file changed on disk is picked up on restart.
pub struct PromptLibrary {
    dir: Option<PathBuf>,
    /// Keyed by the id as asked and by the resolved source, so `welcome` and `welcome.wav`
    /// share one `Arc`.
    cache: RwLock<HashMap<String, Arc<Prompt>>>,
}

impl PromptLibrary {
    pub fn new(dir: Option<PathBuf>) -> PromptLibrary {
        PromptLibrary {
            dir,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The media dir, if one is set.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Names of the prompts compiled into the binary (`welcome.wav`, …).
    pub fn embedded_names() -> impl Iterator<Item = &'static str> {
        EMBEDDED.iter().map(|(n, _)| *n)
    }

    /// `id` is `welcome` or `welcome.wav`; without an extension `.wav` then `.mp3` is tried.
    pub fn get(&self, id: &str) -> Result<Arc<Prompt>, PromptError> {
        if let Some(p) = self.cached(id) {
            return Ok(p);
        }
        let source = self.locate(id)?;
        let key = source.cache_key();
        if let Some(p) = self.cached(&key) {
            self.insert(id, p.clone());
            return Ok(p);
        }
        let prompt = match &source {
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| PromptError::Io {
                    path: path.clone(),
                    source,
                })?;
                Prompt::decode(id, &bytes)?
            }
            Source::Embedded(name, bytes) => Prompt::decode(name, bytes)?,
        };
        // Another thread may have decoded it meanwhile: keep the first so every caller
        // shares one Arc.
        let p = self.insert(&key, Arc::new(prompt));
        self.insert(id, p.clone());
        Ok(p)
    }

    /// Whether `id` resolves to a file in the media dir or an embedded prompt (not decoded).
    pub fn exists(&self, id: &str) -> bool {
        self.cached(id).is_some() || self.locate(id).is_ok()
    }

    /// The media dir exists and is readable (when set).
    pub fn check_dir(&self) -> Result<(), PromptError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let io = |source| PromptError::Io {
            path: dir.clone(),
            source,
        };
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(io(std::io::Error::other("not a directory")));
        }
        std::fs::read_dir(dir).map_err(io)?;
        Ok(())
    }

    fn cached(&self, key: &str) -> Option<Arc<Prompt>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn insert(&self, key: &str, p: Arc<Prompt>) -> Arc<Prompt> {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert(p)
            .clone()
    }

    fn locate(&self, id: &str) -> Result<Source, PromptError> {
        validate_id(id)?;
        let lower = id.to_ascii_lowercase();
        let candidates: Vec<String> = if lower.ends_with(".wav") || lower.ends_with(".mp3") {
            vec![id.to_string()]
        } else {
            vec![format!("{id}.wav"), format!("{id}.mp3")]
        };
        if let Some(dir) = &self.dir {
            // A missing or unreadable dir falls through to the embedded prompts;
            // check_dir reports it at start-up.
            if let Ok(canon_dir) = dir.canonicalize() {
                for c in &candidates {
                    let path = dir.join(c);
                    if std::fs::symlink_metadata(&path).is_err() {
                        continue;
                    }
                    let canon = path.canonicalize().map_err(|source| PromptError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    // A symlink inside the dir must not lead out of it.
                    if !canon.starts_with(&canon_dir) {
                        return Err(PromptError::BadId(id.to_string()));
                    }
                    if canon.is_file() {
                        return Ok(Source::File(canon));
                    }
                }
            }
        }
        for c in &candidates {
            if let Some((name, bytes)) = EMBEDDED.iter().find(|(n, _)| n == c) {
                return Ok(Source::Embedded(name, bytes));
            }
        }
        Err(PromptError::NotFound(id.to_string()))
    }
}

/// A play id is a relative path below the media dir: no `..`, no absolute path, no
/// backslash (Windows separators), no NUL, nothing empty.
fn validate_id(id: &str) -> Result<(), PromptError> {
    let bad = id.is_empty()
        || id.len() > 1024
        || id.contains('\0')
        || id.contains('\\')
        || id.starts_with('/')
        || Path::new(id).is_absolute()
        || id
            .split('/')
            .any(|c| c == ".." || c.is_empty() && id.ends_with('/'));
    if bad {
        return Err(PromptError::BadId(id.to_string()));
    }
    Ok(())
}
