# clean: no impairment at all, 1 ms RTT: for measuring the emulator itself.
description=no impairment, RTT 1 ms
delay=0.5ms
