"""Flower backends of the same server and site steps (``flwr`` 1.42): simulation
(``simulation.py``) and deployment (``server_app.py``, ``client_app.py``, ``site_worker.py``,
``processes.py``). ``messages.py`` defines what crosses the network."""

import os as _os

# Flower posts a usage event to telemetry.flower.ai whenever a SuperLink, SuperNode, ServerApp or
# per-message ClientApp starts or stops (flwr/supercore/telemetry.py, on unless
# FLWR_TELEMETRY_ENABLED=0). A federation of plant-floor sites must not call out to a third party,
# and a blocked network costs each ClientApp up to 4 s at exit: off for this process and every
# Flower process it starts (they inherit the environment), unless the user set it.
_os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
