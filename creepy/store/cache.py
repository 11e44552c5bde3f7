"""A bounded cache of clean (frozen) blocks, least recently used evicted first.

It holds decoded frozen blocks keyed by address, each with the era it was born in: a block
that the sweep freed and the log reused has the same address and a newer era, so a stale entry
is never returned.  Only clean blocks live here; melted blocks belong to their trees and blocks
waiting to be written belong to the store's pending map, so evicting never loses data.
"""

from collections import OrderedDict


class BlockCache:
    def __init__(self, limit):
        self.limit = limit          # bytes
        self.used = 0
        self.map = OrderedDict()    # addr -> (era, obj, size)
        self.hits = self.misses = self.evictions = 0

    def get(self, addr, era):
        ent = self.map.get(addr)
        if ent is None or ent[0] != era:
            self.misses += 1
            return None
        self.map.move_to_end(addr)
        self.hits += 1
        return ent[1]

    def has(self, addr, era):
        ent = self.map.get(addr)
        return ent is not None and ent[0] == era

    def put(self, addr, era, obj, size):
        old = self.map.pop(addr, None)
        if old is not None:
            self.used -= old[2]
        self.map[addr] = (era, obj, size)
        self.used += size
        if self.used > self.limit:
            self.shrink(self.limit)

    def shrink(self, target):
        m = self.map
        while self.used > target and m:
            _, (_, _, size) = m.popitem(last=False)
            self.used -= size
            self.evictions += 1

    def drop(self, addr):
        old = self.map.pop(addr, None)
        if old is not None:
            self.used -= old[2]

    def __len__(self):
        return len(self.map)
