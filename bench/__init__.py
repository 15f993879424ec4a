"""fedtiny.bench: the host side of protocol v3 (pyserial) and the device emulator.

    from fedtiny.bench import Emulator, bench_device, write_results, bench_emulated
"""
from .host import BenchResult, bench_device, bench_emulated, bench_ports, write_results
from .rundata import BenchError


def __getattr__(name):
    if name == "Emulator":
        from .emulator import Emulator

        return Emulator
    raise AttributeError(name)


__all__ = ["BenchError", "BenchResult", "Emulator", "bench_device", "bench_emulated", "bench_ports",
           "write_results"]
