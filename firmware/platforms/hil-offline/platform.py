"""tinyhil's offline PlatformIO platform: no packages to download.

The compilers are the system's (host g++, arm-none-eabi-gcc from the
distribution); builder/main.py finds them on PATH.
"""

from platformio.public import PlatformBase


class HilofflinePlatform(PlatformBase):
    pass
