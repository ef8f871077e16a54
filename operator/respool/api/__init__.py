"""respool.api"""
