# clean-1g: a 1 Gbit/s bottleneck, 1 ms RTT, no loss: what the emulator forwards at line rate. Offer it more
# than 1 Gbit/s of IP (or an unlimited profile) to see the emulator's own ceiling with
# `popline-bench emulate --throughput`.
description=1 Gbit/s, RTT 1 ms, no loss
rate=1gbit
delay=0.5ms
queue=1000000
