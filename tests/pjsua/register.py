#!/usr/bin/env python3
"""Registers one account with pjsua2 (a second, independent SIP stack) and prints the
outcome: `registered CODE EXPIRES` or `failed CODE REASON`.

usage: register.py SERVER_PORT USER PASSWORD REALM [SECONDS_TO_STAY]
"""
import sys
import time

import pjsua2 as pj

port, user, password, realm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
stay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.result = None

    def onRegState(self, prm):
        info = self.getInfo()
        if self.result is None:
            if info.regIsActive:
                self.result = f"registered {prm.code} {info.regExpiresSec}"
            elif prm.code >= 300:
                self.result = f"failed {prm.code} {prm.reason}"


ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.logConfig.level = 0
cfg.logConfig.consoleLevel = 0
cfg.uaConfig.userAgent = "pjsua2 pivotd-test"
ep.libInit(cfg)
tcfg = pj.TransportConfig()
tcfg.port = 0
tcfg.boundAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
ep.audDevManager().setNullDev()
ep.libStart()

acfg = pj.AccountConfig()
acfg.idUri = f"sip:{user}@{realm}"
acfg.regConfig.registrarUri = f"sip:{realm}"
acfg.regConfig.timeoutSec = 600
acfg.sipConfig.proxies.append(f"sip:127.0.0.1:{port};lr")
cred = pj.AuthCredInfo("digest", realm, user, 0, password)
acfg.sipConfig.authCreds.append(cred)
acc = Account()
acc.create(acfg)
deadline = time.time() + 5
while acc.result is None and time.time() < deadline:
    ep.libHandleEvents(50)
print(acc.result or "failed 0 timeout", flush=True)
end = time.time() + stay
while time.time() < end:
    ep.libHandleEvents(50)
acc.shutdown()
ep.libDestroy()
