"""heatscore.samplers"""
