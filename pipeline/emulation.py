"""The device front end on an emulated Cortex-M4F: build it with Debian's
gcc-arm-none-eabi and newlib (``make -C device m4``), run it bare-metal on
QEMU's mps2-an386 with semihosting, and read what it printed. Used by
tests/test_device.py and bench/bench_device.py."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

DEVICE = Path(__file__).resolve().parents[1] / "device"
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
INSTALL = ("apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm "
           "(Debian/Ubuntu)")


def missing_tools():
    """The emulation tools not on PATH (empty when all are there)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def build(model_dir, build_dir):
    """``make -C device m4`` against ``model_dir``'s header; the ELF's path."""
    result = subprocess.run(["make", "-s", "-C", str(DEVICE), "m4", f"MODEL_DIR={model_dir}",
                             f"BUILD_DIR={build_dir}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"make -C device m4 failed: {result.stderr.strip()[-2000:]}")
    return Path(build_dir) / "m4_frontend.elf"


def section_sizes(build_dir):
    """Bytes of .text, .data and .bss of the front end library (af_*.o) for
    the Cortex-M4F, as arm-none-eabi-size counts them."""
    objects = sorted(str(p) for p in (Path(build_dir) / "m4").glob("af_*.o"))
    if not objects:
        raise PipelineError(f"{build_dir}/m4: no af_*.o; build with `make -C device m4` first")
    lines = subprocess.run(["arm-none-eabi-size", "-t", *objects], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    text, data, bss = (int(v) for v in lines[-1].split()[:3])  # the TOTALS line
    return {"text": text, "data": data, "bss": bss}


def run(elf, samples, *, timeout_s=600):
    """Run the front end on 16 kHz int16 ``samples`` in QEMU.

    Returns
    -------
    dict
        ``inputs``: per window the int8 model input (np.ndarray) or None for
        a window without features; ``instructions``: per window, counted
        with ``-icount shift=0`` (1 ns per instruction; the board's 25 MHz
        timer ticks every 40); ``summary``: the program's summary figures
        (samples, windows, instructions, stack, state and scratch bytes).
        Built as the whole detector (a model with a network header), also
        ``outputs`` (the int8 output of each window with features),
        ``windows`` (centre and probabilities, as the host tool's
        ``--stream --events`` prints them), ``events`` (its event lines, split),
        ``detector`` (network and event instructions, arena and event bytes)
        and ``network_instructions`` / ``event_instructions`` per window;
        ``steps``: (first layer, last layer, instructions) of each step of
        the network (a layer, or a convolution with its pooling) on the last
        window's input.
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "clip.raw"
        np.asarray(samples, "<i2").tofile(raw)
        result = subprocess.run(
            ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-icount", "shift=0",
             "-semihosting-config", f"enable=on,target=native,arg=m4,arg={raw}",
             "-kernel", str(elf)], capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise PipelineError(f"the emulated front end failed (status {result.returncode}): "
                            f"{(result.stdout + result.stderr).strip()[-500:]}")
    found = {"inputs": [], "instructions": [], "summary": {}, "outputs": [], "windows": [],
             "events": [], "detector": {}, "network_instructions": [], "event_instructions": [],
             "steps": []}
    lines = result.stdout.splitlines()

    def figures(line):
        return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}

    for line in lines:
        if line.startswith("cost window="):
            found["instructions"].append(int(line.split("=", 1)[1]))
        elif line.startswith("cost net="):
            cost = figures(line)
            found["network_instructions"].append(cost["net"])
            found["event_instructions"].append(cost["events"])
        elif line.startswith("summary "):
            found["summary"] = figures(line)
        elif line.startswith("detector "):
            found["detector"] = figures(line)
        elif line.startswith("output "):
            found["outputs"].append(np.array(line.split()[1:], np.int64))
        elif line.startswith("window "):
            found["windows"].append([float(v) for v in line.split()[1:]])
        elif line.startswith("event "):
            found["events"].append(line.split()[1:])
        elif line.startswith("step "):
            step = dict(item.split("=") for item in line.split()[1:])
            first, last = (int(v) for v in step["layers"].split("-"))
            found["steps"].append((first, last, int(step["instructions"])))
        else:
            found["inputs"].append(np.array(line.split(), np.int64) if line.strip() else None)
    if (len(found["inputs"]) != len(found["instructions"])
            or found["summary"].get("windows") != len(found["inputs"])):
        raise PipelineError(f"unexpected output from the emulated front end: {lines[-3:]}")
    return found
