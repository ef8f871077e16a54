"""respool.controller"""
