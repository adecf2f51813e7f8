//! The hook itself: checking and filling the operator's `[tts] command`, and running it as a
//! process (no shell, bounded in time, its process group killed). Apart from the engine
//! because this is the part that touches the operating system.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::TtsError;

/// Bytes of the hook's stderr kept for the error message (the end of it).
const STDERR_TAIL: usize = 512;
/// After the hook exits, how long its stderr may stay open (held by a leftover child).
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// Where the text goes in the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TextVia {
    /// `{text}` appears only in arguments after a `--` argument.
    Argument,
    /// No `{text}` placeholder: the text is written on standard input.
    Stdin,
}

/// Spawns the hook (no shell), feeds stdin, and waits within `timeout`; on timeout the
/// whole process group is killed so helpers it started do not linger.
pub(super) async fn run(
    program: &str,
    args: &[String],
    stdin: Option<String>,
    timeout: Duration,
) -> Result<(), TtsError> {
    let deadline = Instant::now() + timeout;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TtsError::NotFound {
            program: program.to_string(),
        },
        _ => TtsError::Spawn {
            program: program.to_string(),
            reason: e.to_string(),
        },
    })?;
    let pid = child.id();

    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A hook that exits without reading its input is its own business (EPIPE ignored).
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let stderr_task = child.stderr.take().map(|mut pipe| {
        tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(buf.get(..n).unwrap_or_default());
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        })
    });

    let status: ExitStatus = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(TtsError::Io(format!("waiting for {program}: {e}"))),
        Err(_) => {
            // Not yet reaped, so the group id cannot have been reused.
            kill_group(pid);
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(t) = stderr_task {
                t.abort();
            }
            return Err(TtsError::Timeout { after: timeout });
        }
    };

    let stderr = match stderr_task {
        Some(task) => {
            let mut task = task;
            match tokio::time::timeout(STDERR_GRACE, &mut task).await {
                Ok(Ok(tail)) => tail,
                Ok(Err(_)) => Vec::new(),
                Err(_) => {
                    // A leftover child of the hook still holds stderr: the group is alive
                    // (so its id is still its own); end it.
                    kill_group(pid);
                    task.abort();
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };

    if status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&stderr);
        Err(TtsError::Failed {
            status: status.to_string(),
            stderr: text.trim().to_string(),
        })
    }
}

#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        if pid > 1 {
            // SAFETY: kill(2) has no memory effects; a negative pid names the process group
            // the hook leads (made by `process_group(0)` at spawn).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>) {}

/// Validates the command and says where the text goes.
pub(super) fn command_plan(command: &[String]) -> Result<TextVia, TtsError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| TtsError::BadCommand("empty command".into()))?;
    if program.is_empty() {
        return Err(TtsError::BadCommand("empty program name".into()));
    }
    if PLACEHOLDERS.iter().any(|p| program.contains(p)) {
        return Err(TtsError::BadCommand(format!(
            "the program name {program:?} must not hold a placeholder"
        )));
    }
    if !args.iter().any(|a| a.contains("{out}")) {
        return Err(TtsError::BadCommand(
            "no {out} argument: the command must write its WAV to {out}".into(),
        ));
    }
    let end_of_options = args.iter().position(|a| a == "--");
    let mut via = TextVia::Stdin;
    for (i, arg) in args.iter().enumerate() {
        if arg.contains("{text}") {
            match end_of_options {
                Some(eoo) if i > eoo => via = TextVia::Argument,
                _ => {
                    return Err(TtsError::BadCommand(format!(
                        "{{text}} in argument {arg:?} is not after a \"--\" argument, so \
                         a text starting with '-' would be read as an option"
                    )))
                }
            }
        }
    }
    Ok(via)
}

const PLACEHOLDERS: [&str; 4] = ["{voice}", "{out}", "{text}", "{language}"];

/// Replaces the placeholders in one pass (a text holding "{out}" stays as it is).
pub(super) fn substitute(arg: &str, voice: &str, out: &str, text: &str, language: &str) -> String {
    let mut result = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let (before, from) = rest.split_at(start);
        result.push_str(before);
        let replacement = [
            ("{voice}", voice),
            ("{out}", out),
            ("{text}", text),
            ("{language}", language),
        ]
        .into_iter()
        .find(|(p, _)| from.starts_with(p));
        match replacement {
            Some((p, value)) => {
                result.push_str(value);
                rest = from.get(p.len()..).unwrap_or_default();
            }
            None => {
                result.push('{');
                rest = from.get(1..).unwrap_or_default();
            }
        }
    }
    result.push_str(rest);
    result
}
