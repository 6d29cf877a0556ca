# burst: Gilbert-Elliott loss, 100 Mbit/s, RTT 50 ms. Good->bad 0.5%, bad->good 25% per packet: bursts of
# 4 packets on average, a mean loss of 0.5 / (0.5 + 25) = 1.96%.
description=100 Mbit/s, RTT 50 ms, GE burst loss ~2%, mean burst 4 packets
rate=100mbit
delay=25ms
loss=GE:0.5%,25%
queue=1bdp
