"""fedtiny.codegen"""
