//! The Debian package's pieces, checked in CI without building the package (that is
//! `packaging/check`, by hand): the systemd unit passes `systemd-analyze verify`, the
//! `[package.metadata.deb]` table of Cargo.toml names files that exist, its conffile is
//! shipped, the unit runs as the user the maintainer script creates, and the default config
//! passes `pivotd check-config` within the unit's open-files limit.

mod common;

use common::binary::pivotd;
use common::*;
use std::process::Command;

fn deb() -> toml::Table {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().expect("Cargo.toml parses");
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("packaging/pivotd.service")).unwrap()
}

/// The value of `key=` in the unit (its last setting).
fn unit_value(key: &str) -> String {
    unit_text()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key}= not in the unit"))
        .trim()
        .to_string()
}

fn str_list<'a>(v: &'a toml::Value, what: &str) -> Vec<&'a str> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("{what}: not a string")))
        .collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    // verify wants ExecStart's binary to exist: a copy of the unit runs the built one.
    let dir = tempdir();
    let unit = unit_text().replace("/usr/bin/pivotd", env!("CARGO_BIN_EXE_pivotd"));
    assert_ne!(unit, unit_text(), "ExecStart does not run /usr/bin/pivotd");
    let path = dir.join("pivotd.service");
    std::fs::write(&path, unit).unwrap();
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "systemd-analyze is not installed (apt-get install systemd; scripts/test.sh does): {e}"
        ),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    // Other units of the machine may draw remarks; none may be about this one.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("pivotd")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_is_hardened_and_reloads_with_sighup() {
    for (key, want) in [
        ("ExecReload", r#"/bin/sh -c 'kill -HUP "$MAINPID"'"#),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", "/var/lib/pivotd"),
        // 5060 and 5061 are above 1024: no capability at all.
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(key), want, "{key}");
    }
    let families = unit_value("RestrictAddressFamilies");
    assert!(
        families.contains("AF_INET") && families.contains("AF_INET6"),
        "{families}"
    );
}

#[test]
fn the_deb_assets_exist_and_the_conffile_is_shipped() {
    let deb = deb();
    let mut dests = Vec::new();
    for asset in deb["assets"].as_array().expect("assets") {
        let [src, dest, _mode] = str_list(asset, "asset")[..] else {
            panic!("an asset is not [source, destination, mode]: {asset}");
        };
        dests.push(dest.to_string());
        if let Some(bin) = src.strip_prefix("target/release/") {
            // Built by cargo deb itself: it must be this package's binary.
            assert_eq!(bin, "pivotd", "{src}");
            continue;
        }
        let found = match src.rsplit_once("/*") {
            Some((dir, ext)) => std::fs::read_dir(repo().join(dir))
                .unwrap_or_else(|e| panic!("{src}: {e}"))
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(ext)),
            None => repo().join(src).is_file(),
        };
        assert!(found, "asset source {src} does not exist");
    }
    let conf = str_list(&deb["conf-files"], "conf-files");
    assert!(!conf.is_empty(), "no conffile");
    for c in conf {
        let shipped = dests.iter().any(|d| d == c.trim_start_matches('/'));
        assert!(
            shipped,
            "conffile {c} is not among the assets' destinations {dests:?}"
        );
    }
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    assert!(repo().join(scripts).join("postinst").is_file());
    let units = deb["systemd-units"].as_table().expect("systemd-units");
    let unit = repo()
        .join(units["unit-scripts"].as_str().unwrap())
        .join(format!("{}.service", units["unit-name"].as_str().unwrap()));
    assert!(unit.is_file(), "the unit {} does not exist", unit.display());
}

#[test]
fn the_unit_runs_as_the_user_the_maintainer_script_creates() {
    let scripts = deb()["maintainer-scripts"].as_str().unwrap().to_string();
    let postinst = std::fs::read_to_string(repo().join(scripts).join("postinst")).unwrap();
    let user = postinst
        .lines()
        .find_map(|l| l.trim().strip_prefix("PIVOTD_USER="))
        .expect("PIVOTD_USER= in postinst");
    assert!(
        postinst.contains("adduser --system"),
        "postinst creates no system user"
    );
    assert_eq!(unit_value("User"), user);
    assert_eq!(unit_value("Group"), user);
}

#[test]
fn the_maintainer_scripts_are_valid_sh_with_one_debhelper_token() {
    let deb = deb();
    let dir = repo().join(deb["maintainer-scripts"].as_str().unwrap());
    for name in ["postinst", "postrm"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        // cargo deb puts the unit's commands where the token is: anywhere else (a comment)
        // it would land mid-line.
        let tokens = text.matches("#DEBHELPER#").count();
        let lines = text.lines().filter(|l| l.trim() == "#DEBHELPER#").count();
        assert!(
            tokens == 1 && lines == 1,
            "{name}: #DEBHELPER# must be one line of its own"
        );
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let changelog = deb["changelog"].as_str().expect("changelog");
    assert!(repo().join(changelog).is_file(), "{changelog}");
}

#[test]
fn the_default_config_passes_check_config_and_fits_the_unit() {
    let config = repo().join("packaging/pivotd.toml");
    let out = pivotd().arg("check-config").arg(&config).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = pivotd::callflow::check::load(&config).expect("the default config loads");
    // Not the demo: SIP on every interface, no account that answers any number.
    assert!(
        cfg.sip.udp.iter().all(|a| a.ip().is_unspecified()),
        "{:?}",
        cfg.sip.udp
    );
    assert!(cfg
        .accounts
        .iter()
        .all(|a| a.id != pivotd::config::DEMO_ACCOUNT_ID));
    // The store is where the unit may write.
    let store = &cfg.store.sqlite;
    assert!(
        store.starts_with(unit_value("ReadWritePaths")),
        "{}",
        store.display()
    );
    assert!(unit_value("ExecStart").ends_with("--config /etc/pivotd/pivotd.toml"));
    // The unit's open-files limit holds every call the config allows.
    let limit: u64 = unit_value("LimitNOFILE").parse().expect("a number");
    let budget = pivotd::fdlimit::Budget::for_config(&cfg);
    assert!(
        budget.check(limit).is_none(),
        "{}",
        budget.check(limit).unwrap()
    );
}
