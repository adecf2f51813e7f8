//! baresip 1.0 (Debian 12) as a real softphone: an account with credentials that registers
//! through pivotd (over UDP, or TLS trusting a test CA) and can dial, headless, on loopback.
//! A missing binary fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::bridge::wav_pcm_8k;
use super::{repo, tempdir};

pub struct Baresip {
    child: tokio::process::Child,
    dir: PathBuf,
    pub sip_port: u16,
    /// Its `ctrl_tcp` port, for a TLS phone ([`Baresip::send_keys`]).
    ctrl_port: Option<u16>,
}

/// How a phone is set up: its registration interval, commands to run at start, account
/// parameters, the audio it sends and whether it records what it hears.
struct Setup<'a> {
    regint: Duration,
    commands: &'a [&'a str],
    account_params: &'a str,
    prompt: PathBuf,
    record: bool,
    /// The `contacts` file (the address book the `presence` module subscribes from).
    contacts: String,
    /// More application modules, loaded in order after `menu.so`.
    app_modules: &'a [&'a str],
    /// Over TLS, trusting this CA file (`sip_cafile`); None: UDP.
    tls_ca: Option<&'a Path>,
}

/// A free UDP port whose next one is free too (baresip binds both).
fn free_pair() -> u16 {
    for _ in 0..200 {
        let p = 40000 + 2 * (rand::random::<u16>() % 10000);
        let a = std::net::UdpSocket::bind(("127.0.0.1", p));
        let b = std::net::UdpSocket::bind(("127.0.0.1", p + 1));
        let c = std::net::TcpListener::bind(("127.0.0.1", p));
        let d = std::net::TcpListener::bind(("127.0.0.1", p + 1));
        if a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok() {
            return p;
        }
    }
    panic!("no free port pair for baresip")
}

impl Baresip {
    /// Starts baresip registering `user`@`realm` at `server` (its outbound proxy).
    pub async fn start(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        regint: Duration,
    ) -> Baresip {
        Baresip::start_with(server, user, password, realm, regint, &[]).await
    }

    /// Like [`Baresip::start`], running `commands` (`-e`, e.g. `/dial sip:5000@realm`).
    pub async fn start_with(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        regint: Duration,
        commands: &[&str],
    ) -> Baresip {
        Baresip::start_account(server, user, password, realm, regint, commands, "").await
    }

    /// A phone that answers calls by itself (`answermode=auto`), sending its tone.
    pub async fn start_answering(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
    ) -> Baresip {
        let regint = Duration::from_secs(600);
        Baresip::start_account(
            server,
            user,
            password,
            realm,
            regint,
            &[],
            ";answermode=auto",
        )
        .await
    }

    /// Like [`Baresip::start_with`], with more account parameters (`;answermode=auto`).
    pub async fn start_account(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        regint: Duration,
        commands: &[&str],
        account_params: &str,
    ) -> Baresip {
        let setup = Setup {
            regint,
            commands,
            account_params,
            prompt: repo().join("media/tone-1khz.wav"),
            record: false,
            contacts: String::new(),
            app_modules: &[],
            tls_ca: None,
        };
        Baresip::launch(server, user, password, realm, setup)
    }

    /// A phone registering over TLS at `server` (pivotd's TLS socket), trusting `ca_file`,
    /// running `commands` (`/dial …`), with more `account_params` (`;answermode=auto`); it
    /// sends `prompt`, records what it hears ([`Baresip::heard`]) and takes keys
    /// ([`Baresip::send_keys`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_tls(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        ca_file: &Path,
        prompt: &Path,
        commands: &[&str],
        account_params: &str,
    ) -> Baresip {
        let setup = Setup {
            regint: Duration::from_secs(600),
            commands,
            account_params,
            prompt: prompt.to_path_buf(),
            record: true,
            contacts: String::new(),
            app_modules: &["ctrl_tcp.so"],
            tls_ca: Some(ca_file),
        };
        Baresip::launch(server, user, password, realm, setup)
    }

    /// Sends `keys` as RFC 4733 events in its call, one after another, through `ctrl_tcp`
    /// (`sndcode`).
    pub async fn send_keys(&self, keys: &str) {
        use tokio::io::AsyncWriteExt;
        let port = self.ctrl_port.expect("a phone started with ctrl_tcp");
        let mut ctrl = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("baresip's ctrl_tcp");
        for key in keys.chars() {
            let json = format!(r#"{{"command":"sndcode","params":"{key}","token":"k"}}"#);
            let netstring = format!("{}:{json},", json.len());
            ctrl.write_all(netstring.as_bytes()).await.unwrap();
            // A key's event lasts about 100 ms; the next one after it ends.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A phone whose `presence` module watches `watched` (a SIP URI): its address book holds
    /// that one contact with `;presence=p2p`, so it sends `SUBSCRIBE` with `Event: presence`
    /// (through `server`, answering the challenge with the account's credentials) and logs
    /// `<URI> changed status from X to Y` when a NOTIFY changes what it knew.
    pub async fn start_watching(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        watched: &str,
    ) -> Baresip {
        let setup = Setup {
            regint: Duration::from_secs(600),
            commands: &[],
            account_params: "",
            prompt: repo().join("media/tone-1khz.wav"),
            record: false,
            contacts: format!("\"Watched\" <{watched}>;presence=p2p\n"),
            app_modules: &["contact.so", "presence.so"],
            tls_ca: None,
        };
        Baresip::launch(server, user, password, realm, setup)
    }

    /// A phone that answers by itself, sending `prompt` (an 8 kHz WAV, long enough for the
    /// call: baresip hangs up when its audio file ends) and recording what it hears
    /// ([`Baresip::heard`]).
    pub async fn start_recording(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        prompt: &Path,
    ) -> Baresip {
        let setup = Setup {
            regint: Duration::from_secs(600),
            commands: &[],
            account_params: ";answermode=auto",
            prompt: prompt.to_path_buf(),
            record: true,
            contacts: String::new(),
            app_modules: &[],
            tls_ca: None,
        };
        Baresip::launch(server, user, password, realm, setup)
    }

    fn launch(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        setup: Setup<'_>,
    ) -> Baresip {
        let dir = tempdir();
        let sip_port = free_pair();
        // baresip's SDES (RFC 4568) is its srtp module: an account asking for
        // `mediaenc=srtp…` needs it loaded before the accounts are read.
        let srtp = if setup.account_params.contains("mediaenc=srtp") {
            "module\tsrtp.so\n"
        } else {
            ""
        };
        let mut config = format!(
            "poll_method\tepoll\nsip_listen\t127.0.0.1:{sip_port}\nnet_interface\t127.0.0.1\n\
             audio_player\talsa,null\naudio_source\taufile,{}\naudio_alert\talsa,null\n\
             module_path\t/usr/lib/baresip/modules\nmodule\tstdio.so\nmodule\tg711.so\n\
             module\taufile.so\n{srtp}module\taccount.so\nmodule_app\tmenu.so\n",
            setup.prompt.display()
        );
        if setup.record {
            // sndfile dumps each call's audio: `dump-…-dec.wav` is what the phone hears.
            config.push_str(&format!(
                "module\tsndfile.so\nsnd_path\t{}\n",
                dir.display()
            ));
        }
        for m in setup.app_modules {
            config.push_str(&format!("module_app\t{m}\n"));
        }
        let ctrl_port = setup.app_modules.contains(&"ctrl_tcp.so").then(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            config.push_str(&format!("ctrl_tcp_listen\t127.0.0.1:{port}\n"));
            port
        });
        let transport = match setup.tls_ca {
            Some(ca) => {
                config.push_str(&format!("sip_cafile\t{}\n", ca.display()));
                "tls"
            }
            None => "udp",
        };
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{user}@{realm};transport={transport}>;auth_pass={password};outbound=\"sip:{server};transport={transport}\";regint={}{}\n",
                setup.regint.as_secs(),
                setup.account_params
            ),
        )
        .unwrap();
        std::fs::write(dir.join("contacts"), &setup.contacts).unwrap();
        let log = std::fs::File::create(dir.join("out.log")).unwrap();
        let mut cmd = tokio::process::Command::new("baresip");
        cmd.arg("-f").arg(&dir).arg("-s");
        for c in setup.commands {
            cmd.arg("-e").arg(c);
        }
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("baresip is not installed (apt-get install baresip): {e}"));
        Baresip {
            child,
            dir,
            sip_port,
            ctrl_port,
        }
    }

    /// What the phone heard in its call, at 8 kHz, once the call has ended (sndfile writes the
    /// WAV's lengths when it closes the file); None before that.
    pub fn heard(&self) -> Option<Vec<i16>> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        let dump = entries
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))?;
        let pcm = wav_pcm_8k(&dump)?;
        (!pcm.is_empty()).then_some(pcm)
    }

    /// What baresip printed so far (its SIP trace included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first message of baresip's SIP trace (`log`) that starts with `start` and contains
/// `containing`, up to the colour reset the trace ends each message with.
pub fn logged_message<'a>(log: &'a str, start: &str, containing: &str) -> Option<&'a str> {
    log.split(start)
        .skip(1)
        .map(|m| m.split("\u{1b}[;m").next().unwrap_or(m))
        .find(|m| m.contains(containing))
}
