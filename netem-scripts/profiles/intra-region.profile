# intra-region: two PoPs in one region: 1 Gbit/s, RTT 10 ms, a little jitter (no reordering), no loss.
description=1 Gbit/s, RTT 10 ms, 0.5 ms jitter
rate=1gbit
delay=5ms
jitter=0.5ms
reorder=no
queue=1bdp
