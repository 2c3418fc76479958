"""Preload a private copy of libusb-1.0 for open3d (installed by scripts/setup.sh).

open3d 0.20 links ``libusb-1.0.so.0``. When the set-up could not install Debian's ``libusb-1.0-0``
system-wide (not root), it unpacks the .deb into the virtual environment and this hook loads that
copy with RTLD_GLOBAL at interpreter start, so ``import open3d`` finds it. Costs ~1 ms.
"""
import ctypes
import os
import sys

_LIB = os.path.join(sys.prefix, "opt", "libusb", "libusb-1.0.so.0")
if os.path.exists(_LIB):
    ctypes.CDLL(_LIB, mode=ctypes.RTLD_GLOBAL)
