"""respool.devcluster"""
