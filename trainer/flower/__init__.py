"""Flower backends of the same server and site steps (``flwr`` 1.42): simulation
(``simulation.py``) and deployment (``server_app.py``, ``client_app.py``, ``site_worker.py``,
``processes.py``). ``messages.py`` defines what crosses the network."""
