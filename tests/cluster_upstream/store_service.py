"""Upstream's unchanged store REST service (`python -m mooncake.mooncake_store_service`),
with its listener on loopback instead of every interface.

usage: store_service.py CONFIG_JSON PORT

The service itself binds `0.0.0.0:PORT`; the tests only ever talk to 127.0.0.1, so the
aiohttp site it creates is given that address here and nothing else changes. Its transfer
engine advertises `local_hostname` of the config (the tests give 127.0.0.1) and binds the
address in MC_TCP_BIND_ADDRESS, which the tests set to 127.0.0.1 too.
"""
import sys

import aiohttp.web as web

_Site = web.TCPSite


class LoopbackSite(_Site):
    def __init__(self, runner, host=None, port=None, **kwargs):
        super().__init__(runner, "127.0.0.1", port, **kwargs)


web.TCPSite = LoopbackSite

from mooncake import mooncake_store_service as service  # noqa: E402

config, port = sys.argv[1], sys.argv[2]
sys.argv = ["mooncake_store_service", "--config", config, "--port", port]
service.sync_main()
