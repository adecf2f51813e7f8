#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/<target>/ (committed; small).

Run from the repository root: python3 fuzz/make_seeds.py
The SIP seeds add to tests/fixtures/rfc4475/*.dat (RFC 4475 torture messages, already in the
repo), which fuzz/run.sh and tests/mutation.rs read from there directly. Everything here is
written for pivotd: the SIP requests follow tests/torture_server.rs and sipp-scenarios/, the
SDP offers the samples of src/media/sdp/tests.rs, the TwiML and Kazoo JSON those of
src/pivot/twiml.rs, tests/twiml_calls.rs, tests/pivot_calls.rs and tests/fixtures/api/.
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


SDP_SIPP = crlf("""v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
""")


def sip(start, headers, body=b"", cl=True):
    out = start + "\r\n"
    for n, v in headers:
        out += f"{n}: {v}\r\n"
    if cl:
        out += f"Content-Length: {len(body)}\r\n"
    out += "\r\n"
    return out.encode() + body


def req(method, uri, extra=(), body=b"", call_id="seed-1@127.0.0.1", cseq=None):
    h = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-seed-1;rport"),
        ("From", '"Caller" <sip:alice@127.0.0.1:5070>;tag=from-1'),
        ("To", "<sip:7000@pivotd.test>"),
        ("Call-ID", call_id),
        ("CSeq", cseq or f"1 {method}"),
        ("Max-Forwards", "70"),
    ]
    for n, v in extra:
        h = [(hn, hv) for hn, hv in h if hn != n]
        h.append((n, v))
    return sip(f"{method} {uri} SIP/2.0", h, body)


# --- sip_message -------------------------------------------------------------------------
contact = [("Contact", "<sip:alice@127.0.0.1:5070>"), ("User-Agent", "seed")]
put("sip_message", "invite_sdp.sip",
    req("INVITE", "sip:7000@pivotd.test", contact + [("Content-Type", "application/sdp")],
        SDP_SIPP.encode()))
put("sip_message", "invite_x_headers.sip",
    req("INVITE", "sip:%2B1555%20123@pivotd.test;user=phone",
        contact + [("X-Account", "a1"), ("X-Trace", "t;x=1"), ("Record-Route", "<sip:p1;lr>"),
                   ("Require", "100rel"), ("Accept", "application/sdp")]))
put("sip_message", "options.sip", req("OPTIONS", "sip:probe@pivotd.test", [("Accept", "application/sdp")]))
put("sip_message", "message_im.sip",
    req("MESSAGE", "im:bob@pivotd.test", [("Content-Type", "text/plain")], b"hello"))
put("sip_message", "options_multibyte.sip", req("OPTIONS", "ab:\u00e9"))
put("sip_message", "invite_multibyte.sip", req("INVITE", "sip:\u20ac@pivotd.test", contact))
put("sip_message", "info_dtmf_relay.sip",
    req("INFO", "sip:7000@pivotd.test", [("To", "<sip:7000@pivotd.test>;tag=lt"),
                                           ("Content-Type", "application/dtmf-relay")],
        b"Signal=5\r\nDuration=160\r\n", cseq="2 INFO"))
put("sip_message", "info_dtmf.sip",
    req("INFO", "sip:7000@pivotd.test", [("Content-Type", "application/dtmf")], b"#",
        cseq="3 INFO"))
put("sip_message", "bye.sip", req("BYE", "sip:7000@127.0.0.1:5060", [("To", "<sip:7000@pivotd.test>;tag=lt")], cseq="4 BYE"))
put("sip_message", "ack.sip", req("ACK", "sip:7000@127.0.0.1:5060", [("To", "<sip:7000@pivotd.test>;tag=lt")]))
put("sip_message", "cancel.sip", req("CANCEL", "sip:7000@pivotd.test", cseq="1 CANCEL"))
put("sip_message", "response_200.sip",
    sip("SIP/2.0 200 OK",
        [("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours;received=192.0.2.1;rport=5062"),
         ("From", "<sip:7000@pivotd.test>;tag=lt"), ("To", "<sip:alice@127.0.0.1>;tag=rt"),
         ("Call-ID", "ours-1"), ("CSeq", "9 BYE")]))
put("sip_message", "response_180_nocl.sip",
    sip("SIP/2.0 180 Ringing",
        [("v", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("f", "<sip:a@b>;tag=1"), ("t", "<sip:c@d>;tag=2"),
         ("i", "x"), ("CSeq", "1 INVITE")], cl=False))
put("sip_message", "compact_folded.sip",
    b"OPTIONS  sip:bob@example.com SIP/2.0 \n"
    b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP / 2.0 / TCP b.example.com ; branch = z9hG4bK2\n"
    b"f : <sip:alice@example.com> ; tag = a1\n"
    b"t:\n <sip:bob@example.com>\n"
    b"i: c1\n"
    b"CSeq: 1\n  OPTIONS\n"
    b"k: timer\n"
    b"l: 0\n\n")
put("sip_message", "two_on_a_stream.sip",
    b"\r\n\r\n" + req("OPTIONS", "sip:a@pivotd.test") + req("BYE", "sip:b@pivotd.test", call_id="seed-2"))
put("sip_message", "ipv6_uri.sip",
    req("OPTIONS", "sip:bob@[2001:db8::1]:5070;lr;transport=tcp",
        [("Via", "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK6")]))

# --- sdp ---------------------------------------------------------------------------------
put("sdp", "sipp.sdp", SDP_SIPP)
put("sdp", "linphone.sdp", crlf("""v=0
o=alice 3071 1262 IN IP4 192.168.1.20
s=Talk
c=IN IP4 192.168.1.20
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 9 0 8 101 97
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:101 telephone-event/48000
a=rtpmap:97 telephone-event/8000
a=rtcp-fb:* trr-int 1000
m=video 9078 RTP/AVP 96
a=rtpmap:96 VP8/90000
"""))
put("sdp", "baresip6.sdp", """v=0
o=- 1234 5678 IN IP6 2001:db8::5
s=-
c=IN IP6 2001:db8::5
t=0 0
m=audio 10000 RTP/AVP 96 8 0 101
b=AS:64
a=rtpmap:96 opus/48000/2
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
""")
put("sdp", "hold.sdp", crlf("""v=0
o=bob 1 2 IN IP4 10.0.0.2
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 4000 RTP/AVP 8 101
a=rtpmap:101 telephone-event/8000
a=sendonly
"""))
put("sdp", "dynamic_pcmu_media_c.sdp", crlf("""v=0
o=x 1 1 IN IP4 10.0.0.3
s=-
t=0 0
m=video 0 RTP/AVP 31
m=audio 5000/2 RTP/AVP 18 96 101
c=IN IP4 10.0.0.3/127
a=rtpmap:18 G729/8000
a=rtpmap:96 pcmu/8000/1
a=rtpmap:101 telephone-event/8000
a=ptime:30
a=recvonly
"""))

# --- rtp_dtmf ----------------------------------------------------------------------------


def rtp(pt, seq, ts, ssrc, payload, marker=False, csrc=(), ext=None, pad=0):
    b0 = 0x80 | len(csrc) | (0x10 if ext is not None else 0) | (0x20 if pad else 0)
    b1 = pt | (0x80 if marker else 0)
    out = struct.pack("!BBHII", b0, b1, seq, ts, ssrc)
    for c in csrc:
        out += struct.pack("!I", c)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += b"\0" * (pad - 1) + bytes([pad])
    return out


def ev(code, end, duration):
    return bytes([code, (0x80 if end else 0) | 10]) + struct.pack("!H", duration)


def packets(event_pt, pkts):
    out = bytes([event_pt])
    for p in pkts:
        assert len(p) < 256
        out += bytes([len(p)]) + p
    return out


press = [rtp(101, 1, 1000, 7, ev(5, False, 160), marker=True)]
press += [rtp(101, 2 + i, 1000, 7, ev(5, False, 320 + 160 * i)) for i in range(3)]
press += [rtp(101, 5 + i, 1000, 7, ev(5, True, 960)) for i in range(3)]
press += [rtp(101, 8, 3000, 7, ev(11, False, 160), marker=True),
          rtp(101, 9, 3000, 7, ev(11, True, 320))]
put("rtp_dtmf", "press_5_then_hash.bin", packets(101, press))
put("rtp_dtmf", "pcmu_and_event.bin",
    packets(96, [rtp(0, 1, 0, 9, bytes(range(160))), rtp(96, 2, 160, 9, ev(1, True, 800), marker=True)]))
put("rtp_dtmf", "csrc_ext_padding.bin",
    packets(101, [rtp(101, 1, 5, 1, ev(0, False, 1), csrc=(1, 2), ext=b"\x10\x01\0\0", pad=4),
                  rtp(101, 2, 5, 1, ev(15, True, 2), marker=True, pad=1)]))
put("rtp_dtmf", "rtcp_rr.bin",
    packets(101, [bytes([0x81, 201, 0, 7]) + b"\0" * 28, b"Signal=5\r\n", b"10"]))

# --- twiml -------------------------------------------------------------------------------
put("twiml", "gather.xml", """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Gather action="handle-key.php" numDigits="4" timeout="10">
    <Say voice="woman" language="en-gb">Please enter your PIN</Say>
    <Pause/>
    <Play loop="2">beep.wav</Play>
  </Gather>
  <Say>We did not get your PIN.</Say>
</Response>""")
put("twiml", "verbs.xml", """<Response>
  <Play loop="0"> http://media.example/a.mp3 </Play>
  <Pause length="3"></Pause>
  <Redirect method="GET">/next</Redirect>
  <Redirect>../b?step=2</Redirect>
  <Reject reason="busy"/>
  <Dial callerId="+1555" timeout="20" action="dialed"><Number>+1 415 555</Number><Sip>sip:a@b</Sip></Dial>
  <Sms>hi</Sms>
  <Hangup/>
</Response>""")
put("twiml", "dial.xml", """<Response>
  <Dial action="after" method="get" timeout="0" timeLimit="60" hangupOnStar="true"
        callerId="+15550001" strategy="single" record="do-not-record">
    <Number sendDigits="ww1">+1 (415) 555-0100</Number>
    <Sip>sips:desk@pbx.example;transport=tls</Sip>
    <User>u1</User><Device>d1</Device>
  </Dial>
  <Dial record="true">100</Dial>
  <Dial><Conference>room</Conference></Dial>
  <Dial callerId="a b">1+800-FLOWERS</Dial>
</Response>""")
put("twiml", "entities_cdata.xml",
    "\ufeff<Response><Say>Tom &amp; Jerry &lt;3 &#x41;&#66; <![CDATA[<raw> & ]]>end"
    "<emphasis>ssml</emphasis></Say><!-- c --><Gather finishOnKey=\"\" method=\"get\" "
    "timeout=\"99999\"><Dial>1</Dial></Gather></Response>")

# --- kazoo_json --------------------------------------------------------------------------
put("kazoo_json", "pivot.json",
    '{"module":"pivot","data":{"voice_url":"http://your.server/pivot.php","method":"post",'
    '"req_format":"twiml","req_body_format":"json","req_timeout_ms":3000,"debug":true,'
    '"cdr_url":"https://cdr.example/x"},"children":{"_":{"module":"play","data":{"id":"digit-1"}}}}')
put("kazoo_json", "pin.json",
    '{"module": "tts", "data": {"text": "Enter your pin, then the pound key.", "voice": "male"},'
    ' "children": {"_": {"module": "collect_dtmf", "data": {"max_digits": 4, "terminators": ["#"],'
    ' "collection_name": "pin", "timeout": "3000"}, "children": {"_": {"module": "pivot",'
    ' "data": {"voice_url": "http://127.0.0.1:9/pin"}}}}}}')
put("kazoo_json", "modules.json",
    '{"module":"say","data":{"say":"1234","type":"number","method":"pronounced","language":"en"},'
    '"children":{"_":{"module":"sleep","data":{"duration":2,"unit":"s"},"children":{"_":'
    '{"module":"play","data":{"id":"tone-1khz","loop_count":2,"answer":false,'
    '"endless_playback":false,"terminators":["1","*"]},"children":{"_":{"module":"response",'
    '"data":{"code":486,"message":"Busy Here","media":"busy"},"children":{"1":'
    '{"module":"hangup","data":{"skip_module":true}}}}}}}}}}')
put("kazoo_json", "bom_ws.json", '\ufeff  \n{"module":"hangup"}\n')

# --- config ------------------------------------------------------------------------------
put("config", "full.toml", """[sip]
udp = ["127.0.0.1:5060", "[::1]:5060"]
tcp = ["127.0.0.1:5060"]
advertise = "192.0.2.10"
max_calls = 100
max_calls_per_second = 10
max_call_duration_s = 3600
timer_t1_ms = 500

[media]
ip = "127.0.0.1"
port_min = 20000
port_max = 20099
rtp_timeout_s = 0

[tts]
command = ["espeak-ng", "-v", "{voice}", "-w", "{out}", "--", "{text}"]
voices = { female = "en+f3", male = "en+m3" }

[api]
listen = "127.0.0.1:0"

[store]
sqlite = ":memory:"

[pivot]
blacklist_cidrs = ["10.0.0.0/8", "::1/128"]
blacklist_hosts = ["localhost", "Metadata.Google.Internal."]

[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "pivotd.test"
api_key = "k"

[[accounts.callflows]]
numbers = ["7000"]
patterns = ["^\\\\+?1?(555\\\\d{4})$"]
flow = { module = "play", data = { id = "tone-1khz" }, children = { _ = { module = "hangup" } } }

[[accounts.callflows]]
numbers = ["7001"]
flow = '{"module":"pivot","data":{"voice_url":"http://203.0.113.5/ivr"}}'

[[accounts.users]]
id = "u1"
first_name = "A"

[[accounts.devices]]
id = "d1"
owner_id = "u1"
username = "alice"

[[accounts.resources]]
id = "r1"
gateway = "sip:gw.example"
""")
put("config", "empty.toml", "")
put("config", "bad.toml", "[sip]\nmax_calls = 0\nudp = []\ntcp = []\n[media]\nport_min = 5\nport_max = 4\n[oops]\n")
# --- subscribe ---------------------------------------------------------------------------
def subscribe(uri, extra=(), body=b""):
    h = [("Contact", "<sip:2001@127.0.0.1:5070>"), ("From", "<sip:2001@pivotd.test>;tag=sub-1"),
         ("To", f"<{uri}>")]
    return req("SUBSCRIBE", uri, h + list(extra), body, cseq="1 SUBSCRIBE")


put("subscribe", "dialog.sip", subscribe("sip:2002@pivotd.test", [("Event", "dialog"), ("Expires", "3600"), ("Accept", "application/dialog-info+xml")]))
put("subscribe", "presence_id.sip", subscribe("sip:2002@pivotd.test", [("Event", "presence;id=42"), ("Expires", "600"), ("Accept", "application/pidf+xml, */*")]))
put("subscribe", "compact_park.sip", subscribe("sip:%2A3101@127.0.0.1:5060", [("o", 'dialog;sla;x="a;b"'), ("Expires", "0")]))
put("subscribe", "other_account.sip", subscribe("sip:3001@other.test", [("Event", "dialog")]))
put("subscribe", "message_summary.sip", subscribe("sip:2001@pivotd.test", [("Event", "message-summary")]))
put("subscribe", "no_event.sip", subscribe("sip:2002@pivotd.test", [("Expires", "60")]))
put("subscribe", "filter_body.sip", subscribe("sip:2002@pivotd.test", [("Event", "dialog"), ("Content-Type", "application/simple-filter+xml")], b"<filter-set/>"))
put("subscribe", "refresh.sip", subscribe("sip:2002@pivotd.test", [("Event", "dialog"), ("To", "<sip:2002@pivotd.test>;tag=ours"), ("Expires", "1")]))
# --- presence_message (another node's, src/presence/state.rs) ----------------------------
put("presence_message", "calls.json", '{"v":1,"ttl":90,"items":[{"id":"2002@pivotd.test","k":"calls","status":"busy","dialog":{"id":"c1@h","call_id":"c1@h","local_tag":"a1","remote_tag":"b2","direction":"recipient","remote":"sip:1000@pivotd.test"}},{"id":"2001@pivotd.test","k":"calls","status":"ringing","dialog":{"id":"c2","call_id":"c2","direction":"initiator"}}]}')
put("presence_message", "manual_reset.json", '{"v":1,"ttl":3,"items":[{"id":"%2A3101@pivotd.test","k":"reset"},{"id":"2100@pivotd.test","k":"manual","status":"ringing"},{"id":"2100@pivotd.test","k":"calls","status":"idle"}]}')
put("presence_message", "ask.json", '{"v":1,"ask":true}')
# --- media_file (needs sox; skipped without it) -----------------------------------------
import shutil
import subprocess
import tempfile

if shutil.which("sox"):
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in [
            ("pcm16_8k.wav", ["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"]),
            ("ulaw_8k.wav", ["-r", "8000", "-c", "1", "-e", "u-law"]),
            ("alaw_8k.wav", ["-r", "8000", "-c", "1", "-e", "a-law"]),
            ("float_stereo_44k.wav", ["-r", "44100", "-c", "2", "-e", "floating-point", "-b", "32"]),
            ("pcm24_16k.wav", ["-r", "16000", "-c", "1", "-b", "24"]),
            ("mono_16k.mp3", ["-r", "16000", "-c", "1"]),
        ]:
            out = os.path.join(tmp, name)
            subprocess.run(["sox", "-n", *args, out, "synth", "0.01", "sine", "1000"], check=True)
            with open(out, "rb") as f:
                put("media_file", name, f.read())
else:
    print("sox not found: media_file seeds not written")
print("seeds written to", ROOT)
