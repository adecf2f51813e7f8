//! Targets resolved against a config, a directory and bindings loaded through the store.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::registrar::auth::unix_now;
use crate::registrar::directory::Directory;
use crate::store::{DeviceBindings, Store, Write};

const CONFIG: &str = r##"
[sip]
advertise = "203.0.113.5"

[[resources]]
id = "sys"
gateway = "sip:127.0.0.9:5090"

[[accounts]]
id = "acc"
realm = "pbx.test"
caller_id = { external = { name = "ACME", number = "+14155550100" }, internal = { name = "Office" } }
sip_targets = ["10.0.0.0/8", "localhost"]
[[accounts.users]]
id = "u1"
caller_id = { external = { number = "+14155550111" } }
[[accounts.users]]
id = "u2"
[[accounts.users]]
id = "u3"
[[accounts.devices]]
id = "d1"
owner_id = "u1"
username = "2001"
password = "s1"
[[accounts.devices]]
id = "d2"
owner_id = "u1"
username = "2002"
password = "s2"
[[accounts.devices]]
id = "d3"
owner_id = "u2"
username = "2003"
password = "s3"
caller_id = { internal = { number = "2003" } }
[[accounts.devices]]
id = "d4"
owner_id = "u2"
[[accounts.devices]]
id = "d5"
owner_id = "u3"
username = "2005"
password = "s5"
[[accounts.resources]]
id = "c1"
gateway = "sip:127.0.0.2:5070"
prefix = "+1"
suffix = "#9"
username = "trunk"
password = "pw"
[[accounts.resources]]
id = "c2"
gateway = "sip:LOCALHOST;transport=tcp"
caller_id_type = "internal"

[[accounts]]
id = "other"
realm = "other.test"
[[accounts.devices]]
id = "dx"
username = "3001"
password = "sx"
"##;

fn binding(device_id: &str, contact: &str, source: &str, transport: &str) -> Registration {
    Registration {
        account_id: if device_id == "dx" { "other" } else { "acc" }.into(),
        device_id: device_id.into(),
        contact: contact.into(),
        expires_at: unix_now() + 600,
        call_id: format!("reg-{contact}"),
        cseq: 1,
        path: Vec::new(),
        source: source.parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: transport.into(),
        user_agent: None,
        instance: None,
        q: None,
        updated: unix_now(),
    }
}

/// The bindings every test starts from: d1 at two contacts (one over TCP through a proxy),
/// d2 and d5 at one each, dx in the other account; d3 and d4 are not registered.
fn bindings() -> Vec<Registration> {
    let mut tcp = binding(
        "d1",
        "sip:2001@192.168.1.20:5062;transport=tcp",
        "198.51.100.7:40001",
        "TCP",
    );
    tcp.path = vec!["<sip:edge.pbx.test;lr>".into()];
    vec![
        binding(
            "d1",
            "sip:2001@192.168.1.20:5062",
            "198.51.100.7:40000",
            "UDP",
        ),
        tcp,
        binding("d2", "sip:2002@192.168.1.21", "198.51.100.8:5060", "UDP"),
        binding("d5", "sip:2005@192.168.1.25", "198.51.100.9:5060", "UDP"),
        binding("dx", "sip:3001@192.168.9.9", "198.51.100.99:5060", "UDP"),
    ]
}

/// What a call in `acc` resolves against.
struct World {
    config: Arc<Config>,
    registrar: Registrar,
    local: LocalSockets,
}

impl World {
    fn new(toml: &str, bindings: Vec<Registration>) -> World {
        let config = Arc::new(Config::from_toml_str(toml, Path::new(".")).unwrap());
        let store = Store::open(":memory:").unwrap();
        let mut devices: Vec<(String, String)> = bindings
            .iter()
            .map(|b| (b.account_id.clone(), b.device_id.clone()))
            .collect();
        devices.dedup();
        for (account_id, device_id) in devices {
            store.write(Write::Registrations(DeviceBindings {
                bindings: bindings
                    .iter()
                    .filter(|b| b.device_id == device_id)
                    .cloned()
                    .collect(),
                account_id,
                device_id,
            }));
        }
        store.flush().unwrap();
        let directory = Arc::new(Directory::from_config(&config));
        let registrar = Registrar::new(
            crate::config::live::LiveConfig::new(config.clone()),
            directory,
            Some(store),
        );
        let local = LocalSockets {
            udp: vec!["127.0.0.1:5060".parse().unwrap()],
            tcp: vec!["127.0.0.1:5060".parse().unwrap()],
            tls: vec!["127.0.0.1:5061".parse().unwrap()],
        };
        World {
            config,
            registrar,
            local,
        }
    }

    fn standard() -> World {
        World::new(CONFIG, bindings())
    }

    fn ctx<'a>(&'a self, calling: Option<&'a str>) -> ResolveContext<'a> {
        ResolveContext {
            config: &self.config,
            account_id: "acc",
            registrar: &self.registrar,
            local: &self.local,
            calling_device: calling,
            can_call_self: false,
        }
    }
}

fn device(id: &str) -> Target {
    Target::Device { id: id.into() }
}

fn user(id: &str) -> Target {
    Target::User { id: id.into() }
}

fn number(n: &str, local: bool) -> Target {
    Target::Number {
        number: n.into(),
        local,
    }
}

fn sip(uri: &str) -> Target {
    Target::Sip { uri: uri.into() }
}

fn request_uris(r: &Resolved) -> Vec<Vec<&str>> {
    r.stages
        .iter()
        .map(|s| s.iter().map(|f| f.request_uri.as_str()).collect())
        .collect()
}

#[tokio::test]
async fn a_device_rings_every_binding_at_its_source() {
    let w = World::standard();
    let r = resolve(&w.ctx(None), &device("d1")).await.unwrap();
    assert_eq!(r.stages.len(), 1);
    let mut forks = r.stages[0].clone();
    forks.sort_by(|a, b| a.request_uri.cmp(&b.request_uri));
    let (udp, tcp) = (&forks[0], &forks[1]);
    assert_eq!(udp.request_uri, "sip:2001@192.168.1.20:5062");
    assert_eq!(udp.to, "<sip:2001@pbx.test>");
    assert_eq!(
        udp.peer,
        Peer {
            proto: Proto::Udp,
            remote: "198.51.100.7:40000".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        }
    );
    assert_eq!(udp.local_host, "203.0.113.5:5060");
    assert!(udp.route.is_empty());
    assert_eq!(udp.device_id.as_deref(), Some("d1"));
    assert_eq!(udp.credentials, None);
    assert_eq!((&udp.from_number, &udp.from_name), (&None, &None));
    assert_eq!(udp.label, "device d1 at sip:2001@192.168.1.20:5062");

    assert_eq!(tcp.peer.proto, Proto::Tcp);
    assert_eq!(tcp.peer.remote, "198.51.100.7:40001".parse().unwrap());
    assert_eq!(tcp.route, ["<sip:edge.pbx.test;lr>"]);
}

#[tokio::test]
async fn a_binding_another_node_took_is_rung_from_our_own_socket() {
    // A shared store: d2's REGISTER reached another node (its socket 10.0.0.12:5060)
    // through a proxy, whose Path is kept.
    let mut theirs = binding("d2", "sip:2002@192.168.1.21", "10.0.0.4:5060", "UDP");
    theirs.local = "10.0.0.12:5060".parse().unwrap();
    theirs.path = vec!["<sip:10.0.0.4:5060;lr;received=sip:192.0.2.9:5062>".into()];
    let w = World::new(CONFIG, vec![theirs]);
    let r = resolve(&w.ctx(None), &device("d2")).await.unwrap();
    let fork = &r.stages[0][0];
    assert_eq!(fork.peer.local, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(fork.peer.remote, "10.0.0.4:5060".parse().unwrap());
    assert_eq!(
        fork.route,
        ["<sip:10.0.0.4:5060;lr;received=sip:192.0.2.9:5062>"]
    );
    assert_eq!(fork.local_host, "203.0.113.5:5060");
    // One of ours is kept as it is.
    let w = World::standard();
    let r = resolve(&w.ctx(None), &device("d2")).await.unwrap();
    assert_eq!(r.stages[0][0].peer.local, "127.0.0.1:5060".parse().unwrap());
}

#[tokio::test]
async fn the_calling_device_is_left_out_unless_it_may_call_itself() {
    let w = World::standard();
    let e = resolve(&w.ctx(Some("d1")), &device("d1"))
        .await
        .unwrap_err();
    assert_eq!(e, NotResolved::CalledSelf("d1".into()));
    assert_eq!(e.cause(), "ENDPOINT_CALLED_SELF");
    // d2 has d1's owner: Kazoo's owner_called_self.
    let e = resolve(&w.ctx(Some("d1")), &device("d2"))
        .await
        .unwrap_err();
    assert_eq!(e, NotResolved::OwnerCalledSelf("u1".into()));
    assert_eq!(e.cause(), "OWNER_CALLED_SELF");
    // Another owner's device rings.
    assert!(resolve(&w.ctx(Some("d3")), &device("d1")).await.is_ok());

    let mut ctx = w.ctx(Some("d1"));
    ctx.can_call_self = true;
    let r = resolve(&ctx, &device("d1")).await.unwrap();
    assert_eq!(r.stages[0].len(), 2);
    assert!(resolve(&ctx, &device("d2")).await.is_ok());
}

#[tokio::test]
async fn a_user_rings_all_its_devices_unless_the_caller_is_one_of_them() {
    let w = World::standard();
    let r = resolve(&w.ctx(Some("d3")), &user("u1")).await.unwrap();
    assert_eq!(r.stages.len(), 1);
    let devices: Vec<&str> = r.stages[0]
        .iter()
        .filter_map(|f| f.device_id.as_deref())
        .collect();
    assert_eq!(devices, ["d1", "d1", "d2"]);

    // Its own owner calling: Kazoo's owner_called_self, the other devices included.
    let e = resolve(&w.ctx(Some("d1")), &user("u1")).await.unwrap_err();
    assert_eq!(e, NotResolved::OwnerCalledSelf("u1".into()));

    let mut ctx = w.ctx(Some("d1"));
    ctx.can_call_self = true;
    let r = resolve(&ctx, &user("u1")).await.unwrap();
    assert_eq!(r.stages[0].len(), 3);

    let e = resolve(&w.ctx(Some("d5")), &user("u3")).await.unwrap_err();
    assert_eq!(e, NotResolved::OwnerCalledSelf("u3".into()));
}

#[tokio::test]
async fn unknown_ids_are_unallocated_and_other_accounts_are_not_searched() {
    let w = World::standard();
    for target in [device("nope"), device("dx"), user("nobody")] {
        let e = resolve(&w.ctx(None), &target).await.unwrap_err();
        assert_eq!(e.cause(), "UNALLOCATED_NUMBER", "{target:?}: {e}");
    }
    assert_eq!(
        resolve(&w.ctx(None), &user("nobody")).await.unwrap_err(),
        NotResolved::UnknownUser("nobody".into())
    );
}

#[tokio::test]
async fn devices_and_users_without_bindings_are_not_registered() {
    let w = World::standard();
    // d3 has credentials and no binding; d4 has no credentials, so can never register.
    for (target, want) in [
        (device("d3"), NotResolved::DeviceNotRegistered("d3".into())),
        (device("d4"), NotResolved::DeviceNotRegistered("d4".into())),
        (user("u2"), NotResolved::UserNotRegistered("u2".into())),
    ] {
        let e = resolve(&w.ctx(None), &target).await.unwrap_err();
        assert_eq!(e, want);
        assert_eq!(e.cause(), "USER_NOT_REGISTERED");
    }
    // A binding that has expired is not rung.
    let mut old = binding("d2", "sip:2002@192.168.1.21", "198.51.100.8:5060", "UDP");
    old.expires_at = unix_now() - 1;
    let w = World::new(CONFIG, vec![old]);
    let e = resolve(&w.ctx(None), &device("d2")).await.unwrap_err();
    assert_eq!(e.cause(), "USER_NOT_REGISTERED");
}

#[tokio::test]
async fn a_number_tries_the_accounts_carriers_in_order() {
    let w = World::standard();
    let r = resolve(&w.ctx(Some("d3")), &number("4155550123", true))
        .await
        .unwrap();
    assert_eq!(
        request_uris(&r),
        [
            ["sip:+14155550123%239@127.0.0.2:5070"],
            ["sip:4155550123@localhost;transport=tcp"],
        ]
    );
    let (c1, c2) = (&r.stages[0][0], &r.stages[1][0]);
    assert_eq!(c1.to, "<sip:+14155550123%239@127.0.0.2:5070>");
    assert_eq!(c1.peer.proto, Proto::Udp);
    assert_eq!(c1.peer.remote, "127.0.0.2:5070".parse().unwrap());
    assert_eq!(c1.peer.local, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(c1.local_host, "203.0.113.5:5060");
    assert_eq!(c1.credentials, Some(("trunk".into(), "pw".into())));
    assert_eq!(c1.label, "carrier c1 (sip:127.0.0.2:5070)");
    // External caller ID: d3 has none, its owner u2 neither: the account's.
    assert_eq!(c1.from_number.as_deref(), Some("+14155550100"));
    assert_eq!(c1.from_name.as_deref(), Some("ACME"));

    // localhost looked up; only its IPv4 address has a socket of ours.
    assert_eq!(c2.to, "<sip:4155550123@localhost>");
    assert_eq!(c2.peer.proto, Proto::Tcp);
    assert_eq!(c2.peer.remote, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(c2.credentials, None);
    // Internal caller ID: d3's number, the account's name.
    assert_eq!(c2.from_number.as_deref(), Some("2003"));
    assert_eq!(c2.from_name.as_deref(), Some("Office"));
}

#[tokio::test]
async fn carrier_caller_id_goes_device_then_owner_then_account_and_not_for_other_callers() {
    let w = World::standard();
    let r = resolve(&w.ctx(Some("d1")), &number("5", true))
        .await
        .unwrap();
    let c1 = &r.stages[0][0];
    assert_eq!(c1.from_number.as_deref(), Some("+14155550111"));
    assert_eq!(c1.from_name.as_deref(), Some("ACME"));
    // A call no device places (a carrier's, an anonymous one) keeps its caller's ID.
    let r = resolve(&w.ctx(None), &number("5", true)).await.unwrap();
    assert_eq!(
        (&r.stages[0][0].from_number, &r.stages[0][0].from_name),
        (&None, &None)
    );
}

#[tokio::test]
async fn system_carriers_serve_non_local_numbers_when_there_are_any() {
    let w = World::standard();
    let r = resolve(&w.ctx(None), &number("911", false)).await.unwrap();
    assert_eq!(request_uris(&r), [["sip:911@127.0.0.9:5090"]]);
    assert_eq!(r.stages[0][0].label, "carrier sys (sip:127.0.0.9:5090)");

    // No system carriers: the account's serve every number.
    let no_system = CONFIG.replace(
        "[[resources]]\nid = \"sys\"\ngateway = \"sip:127.0.0.9:5090\"\n",
        "",
    );
    let w = World::new(&no_system, bindings());
    assert!(w.config.resources.is_empty());
    let r = resolve(&w.ctx(None), &number("911", false)).await.unwrap();
    assert_eq!(r.stages.len(), 2);

    // No carriers at all.
    let bare = "[[accounts]]\nid = \"acc\"\nrealm = \"pbx.test\"";
    let w = World::new(bare, Vec::new());
    for local in [true, false] {
        let e = resolve(&w.ctx(None), &number("911", local))
            .await
            .unwrap_err();
        assert_eq!(e, NotResolved::NoCarriers);
        assert_eq!(e.cause(), "NO_ROUTE_DESTINATION");
    }
    // Only system carriers: a local number has none.
    let system_only = "[[resources]]\nid = \"s\"\ngateway = \"sip:127.0.0.9\"\n\
                       [[accounts]]\nid = \"acc\"\nrealm = \"pbx.test\"";
    let w = World::new(system_only, Vec::new());
    assert_eq!(
        resolve(&w.ctx(None), &number("911", true))
            .await
            .unwrap_err(),
        NotResolved::NoCarriers
    );
}

#[tokio::test]
async fn unreachable_carriers_are_left_out() {
    let toml = "[[accounts]]\nid = \"acc\"\nrealm = \"pbx.test\"\n\
                [[accounts.resources]]\nid = \"tls\"\ngateway = \"sips:127.0.0.2\"\n\
                [[accounts.resources]]\nid = \"tcp\"\ngateway = \"sip:127.0.0.3;transport=tcp\"\n\
                [[accounts.resources]]\nid = \"udp\"\ngateway = \"sip:127.0.0.4\"\n\
                [[accounts.resources]]\nid = \"v6\"\ngateway = \"sip:[::1]\"\n\
                [[accounts.resources]]\nid = \"lost\"\ngateway = \"sip:nothing.invalid\"";
    let mut w = World::new(toml, Vec::new());
    w.local.tcp.clear();
    let r = resolve(&w.ctx(None), &number("1", true)).await.unwrap();
    // sips: stays sips: (RFC 5630), over TLS, verified by the gateway's host.
    assert_eq!(
        request_uris(&r),
        [["sips:1@127.0.0.2"], ["sip:1@127.0.0.4"]]
    );
    let tls = &r.stages[0][0];
    assert_eq!(tls.peer.proto, Proto::Tls);
    assert_eq!(tls.peer.remote, "127.0.0.2:5061".parse().unwrap());
    assert_eq!(tls.tls_name.as_deref(), Some("127.0.0.2"));
    assert_eq!(tls.to, "<sips:1@127.0.0.2>");
    assert_eq!(r.stages[1][0].tls_name, None);
    w.local.tls.clear();
    let r = resolve(&w.ctx(None), &number("1", true)).await.unwrap();
    assert_eq!(request_uris(&r), [["sip:1@127.0.0.4"]]);
    w.local.udp.clear();
    let e = resolve(&w.ctx(None), &number("1", true)).await.unwrap_err();
    // The last carrier's reason.
    assert_eq!(e, NotResolved::HostLookup("nothing.invalid".into()));
    assert_eq!(e.cause(), "NO_ROUTE_DESTINATION");
}

#[tokio::test]
async fn numbers_cannot_change_where_the_request_goes() {
    let w = World::standard();
    let r = resolve(&w.ctx(None), &number("12@evil.test;x?y 1", true))
        .await
        .unwrap();
    assert_eq!(
        r.stages[0][0].request_uri,
        "sip:+112%40evil.test%3Bx%3Fy%201%239@127.0.0.2:5070"
    );
    assert!(parse_sip_uri(&r.stages[0][0].request_uri).is_some());
    for bad in ["", "12\r\n3"] {
        let e = resolve(&w.ctx(None), &number(bad, true)).await.unwrap_err();
        assert_eq!(e.cause(), "INVALID_NUMBER_FORMAT", "{bad:?}");
    }
}

#[tokio::test]
async fn a_sip_uri_in_sip_targets_is_dialled() {
    let w = World::standard();
    // In 10.0.0.0/8.
    let r = resolve(&w.ctx(None), &sip(" sip:alice@10.1.2.3:5080 "))
        .await
        .unwrap();
    let f = &r.stages[0][0];
    assert_eq!(f.request_uri, "sip:alice@10.1.2.3:5080");
    assert_eq!(f.to, "<sip:alice@10.1.2.3:5080>");
    assert_eq!(f.peer.remote, "10.1.2.3:5080".parse().unwrap());
    assert_eq!(f.peer.proto, Proto::Udp);
    assert_eq!((f.credentials.clone(), f.device_id.clone()), (None, None));
    // A host name of sip_targets, any case; loopback is fine (no URL guard for SIP).
    let r = resolve(&w.ctx(None), &sip("sip:bob@LocalHost:5099;transport=tcp"))
        .await
        .unwrap();
    let f = &r.stages[0][0];
    assert_eq!(f.peer.remote, "127.0.0.1:5099".parse().unwrap());
    assert_eq!(f.peer.proto, Proto::Tcp);
    assert_eq!(f.tls_name, None);
    // sips: and transport=tls: TLS, port 5061 by default, verified by the URI's host.
    for uri in ["sips:carol@localhost", "sip:carol@localhost;transport=tls"] {
        let r = resolve(&w.ctx(None), &sip(uri)).await.unwrap();
        let f = &r.stages[0][0];
        assert_eq!(f.peer.proto, Proto::Tls, "{uri}");
        assert_eq!(f.peer.remote, "127.0.0.1:5061".parse().unwrap(), "{uri}");
        assert_eq!(f.tls_name.as_deref(), Some("localhost"), "{uri}");
    }
}

#[tokio::test]
async fn a_sip_uri_of_a_device_or_carrier_is_dialled_as_they_are() {
    let w = World::standard();
    // d1's contact: reached at its NAT source.
    let r = resolve(&w.ctx(None), &sip("sip:2001@192.168.1.20:5062"))
        .await
        .unwrap();
    let f = &r.stages[0][0];
    assert_eq!(f.peer.remote, "198.51.100.7:40000".parse().unwrap());
    assert_eq!(f.device_id.as_deref(), Some("d1"));
    // d2's source address.
    let r = resolve(&w.ctx(None), &sip("sip:x@198.51.100.8"))
        .await
        .unwrap();
    assert_eq!(r.stages[0][0].device_id.as_deref(), Some("d2"));
    // Carrier c1's gateway: with its credentials.
    let r = resolve(&w.ctx(None), &sip("sip:4155550123@127.0.0.2:5070"))
        .await
        .unwrap();
    let f = &r.stages[0][0];
    assert_eq!(f.peer.remote, "127.0.0.2:5070".parse().unwrap());
    assert_eq!(f.credentials, Some(("trunk".into(), "pw".into())));
    assert_eq!(
        f.label,
        "sip target sip:4155550123@127.0.0.2:5070 (carrier c1)"
    );
}

#[tokio::test]
async fn other_sip_uris_are_refused() {
    let w = World::standard();
    for (uri, cause) in [
        // Not a device, carrier or sip_targets entry of the account.
        ("sip:x@192.0.2.50", "CALL_REJECTED"),
        ("sip:x@127.0.0.2:5071", "CALL_REJECTED"),
        ("sip:x@127.0.0.1", "CALL_REJECTED"),
        // Another account's device.
        ("sip:3001@192.168.9.9", "CALL_REJECTED"),
        ("http://10.0.0.1/", "INVALID_NUMBER_FORMAT"),
        ("sip:x@10.0.0.1?Subject=hi", "INVALID_NUMBER_FORMAT"),
        ("sip:x@10.0.0.1;maddr=192.0.2.1", "INVALID_NUMBER_FORMAT"),
        ("<sip:x@10.0.0.1>", "INVALID_NUMBER_FORMAT"),
        // A CR LF in the user part would add a header to the INVITE.
        ("sip:x\r\nX-Evil:1@10.0.0.1", "INVALID_NUMBER_FORMAT"),
        ("sip:x\"@10.0.0.1", "INVALID_NUMBER_FORMAT"),
        ("sip:\u{e4}@10.0.0.1", "INVALID_NUMBER_FORMAT"),
        ("", "INVALID_NUMBER_FORMAT"),
        ("sip:x@10.0.0.1;transport=sctp", "NO_ROUTE_DESTINATION"),
        ("sips:x@10.0.0.1;transport=udp", "NO_ROUTE_DESTINATION"),
        ("sip:x@nothing.invalid", "NO_ROUTE_DESTINATION"),
    ] {
        let e = resolve(&w.ctx(None), &sip(uri)).await.unwrap_err();
        assert_eq!(e.cause(), cause, "{uri}: {e}");
    }
    assert_eq!(
        resolve(&w.ctx(None), &sip("sip:x@192.0.2.50"))
            .await
            .unwrap_err(),
        NotResolved::SipNotAllowed {
            uri: "sip:x@192.0.2.50".into()
        }
    );
}

#[test]
fn local_sockets_match_the_family_and_prefer_a_reachable_one() {
    let local = LocalSockets {
        udp: vec![
            "127.0.0.1:5060".parse().unwrap(),
            "192.0.2.1:5060".parse().unwrap(),
            "[::1]:5060".parse().unwrap(),
        ],
        tcp: vec![],
        tls: vec![],
    };
    let pick = |ip: &str| local.for_remote(Proto::Udp, ip.parse().unwrap());
    assert_eq!(pick("10.0.0.1"), Some("192.0.2.1:5060".parse().unwrap()));
    assert_eq!(pick("127.0.0.5"), Some("127.0.0.1:5060".parse().unwrap()));
    assert_eq!(pick("2001:db8::1"), Some("[::1]:5060".parse().unwrap()));
    assert_eq!(
        local.for_remote(Proto::Tcp, "10.0.0.1".parse().unwrap()),
        None
    );
}
