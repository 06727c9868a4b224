"""placeholder"""
async def _start(k): pass
def _stop(): pass
