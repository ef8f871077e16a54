"""respool.client"""
