"""Keep OpenVINO and NNCF from sending usage statistics (nothing in mxa-edge phones home).

Why not just an environment variable: ``openvino_telemetry`` has none. Without a consent
file it treats "no answer" as consent whenever a tool starts it with the opt-in dialog off
(``openvino.convert_model`` does, and NNCF builds its Telemetry object at import). Writing a
"0" consent file (what ``opt_in_out --opt_out`` does) would change the user's home folder,
so instead, in this process only, the consent check answers DECLINED, and NNCF is told it
runs under CI (``NNCF_CI``), which makes it use its no-op telemetry stub. Both must happen
before openvino.tools / nncf are imported, so every backend calls ``disable_telemetry()``
first.
"""

from __future__ import annotations

import os

_done = False


def disable_telemetry() -> None:
    global _done
    if _done:
        return
    os.environ.setdefault("NNCF_CI", "1")
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:  # no telemetry package installed: nothing can be sent
        _done = True
        return

    def _declined(self, enable_opt_in_dialog, disable_in_ci=False):
        return opt_in_checker.ConsentCheckResult.DECLINED

    opt_in_checker.OptInChecker.check = _declined
    _done = True
