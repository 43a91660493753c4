"""heatscore.estimators"""
