"""heatscore.datasets"""
