# lossy-1pct: 100 Mbit/s, RTT 100 ms, 1% random loss each way, one BDP of queue.
description=100 Mbit/s, RTT 100 ms, 1% loss
rate=100mbit
delay=50ms
loss=1%
queue=1bdp
