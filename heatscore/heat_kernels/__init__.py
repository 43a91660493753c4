"""heatscore.heat_kernels"""
