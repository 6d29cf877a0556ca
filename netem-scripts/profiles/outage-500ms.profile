# outage-500ms: 100 Mbit/s, RTT 50 ms, everything lost both ways for 500 ms, 10 s after the start.
description=100 Mbit/s, RTT 50 ms, a 500 ms outage at 10 s
rate=100mbit
delay=25ms
outage=500ms@10s
queue=1bdp
