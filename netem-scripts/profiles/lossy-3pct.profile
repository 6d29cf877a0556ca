# lossy-3pct: 100 Mbit/s, RTT 100 ms, 3% random loss each way, one BDP of queue.
description=100 Mbit/s, RTT 100 ms, 3% loss
rate=100mbit
delay=50ms
loss=3%
queue=1bdp
