"""fedtiny.bench"""
