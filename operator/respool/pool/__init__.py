"""respool.pool"""
