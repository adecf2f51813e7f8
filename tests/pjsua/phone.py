#!/usr/bin/env python3
"""A pjsua2 phone for the bridge tests: registers one account through pivotd, rings on an
incoming call (180) and answers it after ANSWER_MS (never when negative), plays PLAY_WAV to the
caller (looped) and records what it hears to RECORD_WAV (8 kHz, 16-bit mono).

usage: phone.py SERVER_PORT USER PASSWORD REALM PLAY_WAV RECORD_WAV ANSWER_MS

It prints one line per event, flushed: `registered CODE` or `failed CODE REASON`,
`incoming`, `confirmed`, `dtmf DIGIT`, `disconnected CODE`, then `recorded` once the WAV is
closed. With PHONE_TLS_CA set (a CA file) it registers and calls over TLS, trusting that CA;
with PHONE_SRTP=mandatory as well, its calls' audio is SRTP or nothing (SDES keys, RTP/SAVP
offered and required of an offer it answers, and only over TLS). Once a call's audio flows it
prints `media PROFILE` (RTP/AVP or RTP/SAVP, as negotiated).
Lines on stdin are commands: `dial URI` (a call of its own, through the server),
`dtmf DIGITS` (RFC 4733 in the call), `hangup` (BYE, or a reject while ringing), `quit`;
it quits when stdin closes too.
Everything runs on the main thread (no pjsip or media worker threads), so the Python
callbacks never run on a thread Python does not know.
"""
import os
import select
import sys
import time

import pjsua2 as pj

port, user, password, realm, play, record, answer_ms = sys.argv[1:8]
answer_ms = int(answer_ms)
tls_ca = os.environ.get("PHONE_TLS_CA")
srtp = os.environ.get("PHONE_SRTP") == "mandatory"


def say(line):
    print(line, flush=True)


class Phone(pj.Call):
    def __init__(self, acc, call_id):
        super().__init__(acc, call_id)
        self.answer_at = None
        self.recorder = None
        self.player = None

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            say("confirmed")
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            say(f"disconnected {info.lastStatusCode}")
            # Destroying the recorder writes the WAV header's lengths, on one of the
            # conference bridge's next ticks (pjsip 2.15 removes ports asynchronously): the
            # main loop says `recorded` a little later.
            self.recorder = None
            self.player = None
            state.ended = time.time()

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if media.status != pj.PJSUA_CALL_MEDIA_ACTIVE or self.recorder is not None:
                continue
            stream = self.getStreamInfo(i)
            savp = stream.proto == pj.PJMEDIA_TP_PROTO_RTP_SAVP
            say("media RTP/SAVP" if savp else "media RTP/AVP")
            audio = self.getAudioMedia(i)
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(play)
            self.player.startTransmit(audio)
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(record)
            audio.startTransmit(self.recorder)

    def onDtmfDigit(self, prm):
        say(f"dtmf {prm.digit}")


class State:
    call = None
    # When the call ended (time.time()), and whether `recorded` was said.
    ended = None
    recorded = False


state = State()


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.registered = False

    def onRegState(self, prm):
        info = self.getInfo()
        if not self.registered and info.regIsActive:
            self.registered = True
            say(f"registered {prm.code}")
        elif not self.registered and prm.code >= 300:
            say(f"failed {prm.code} {prm.reason}")

    def onIncomingCall(self, prm):
        call = Phone(self, prm.callId)
        if state.call is not None:
            op = pj.CallOpParam()
            op.statusCode = 486
            call.answer(op)
            return
        state.call = call
        say("incoming")
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        if answer_ms >= 0:
            call.answer_at = time.time() + answer_ms / 1000.0


ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.logConfig.level = 0
cfg.logConfig.consoleLevel = 0
cfg.uaConfig.userAgent = "pjsua2 pivotd-test"
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True
cfg.medConfig.threadCnt = 0
cfg.medConfig.clockRate = 8000
cfg.medConfig.sndClockRate = 8000
cfg.medConfig.noVad = True
cfg.medConfig.ecTailLen = 0
ep.libInit(cfg)
tcfg = pj.TransportConfig()
tcfg.port = 0
tcfg.boundAddress = "127.0.0.1"
if tls_ca:
    tcfg.tlsConfig.CaListFile = tls_ca
    ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
else:
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
ep.audDevManager().setNullDev()
ep.libStart()

acfg = pj.AccountConfig()
acfg.idUri = f"sip:{user}@{realm}"
transport = ";transport=tls" if tls_ca else ""
acfg.regConfig.registrarUri = f"sip:{realm}{transport}"
acfg.regConfig.timeoutSec = 600
acfg.sipConfig.proxies.append(f"sip:127.0.0.1:{port}{transport};lr")
acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", realm, user, 0, password))
acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
if srtp:
    acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
    # 1: SRTP only when the signalling's next hop is TLS (SDES keys travel in the SDP).
    acfg.mediaConfig.srtpSecureSignaling = 1
acc = Account()
acc.create(acfg)

while True:
    ep.libHandleEvents(10)
    call = state.call
    if call is not None and call.answer_at is not None and time.time() >= call.answer_at:
        call.answer_at = None
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)
    if state.ended is not None and not state.recorded and time.time() > state.ended + 0.3:
        state.recorded = True
        say("recorded")
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if not ready:
        continue
    line = sys.stdin.readline()
    if not line:
        break  # the test is gone
    command = line.strip()
    if command.startswith("dial ") and call is None:
        call = Phone(acc, pj.PJSUA_INVALID_ID)
        state.call = call
        call.makeCall(command[5:].strip(), pj.CallOpParam(True))
    elif command.startswith("dtmf ") and call is not None and state.ended is None:
        call.dialDtmf(command[5:].strip())
    elif command == "hangup" and call is not None and state.ended is None:
        op = pj.CallOpParam()
        op.statusCode = 603
        call.hangup(op)
    elif command == "quit":
        break

ep.hangupAllCalls()
acc.shutdown()
ep.libDestroy()
os._exit(0)
