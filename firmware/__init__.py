"""fedtiny.firmware"""
