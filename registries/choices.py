"""Choices of the registries app: the colour of the acceleration pill on instance pages."""

ACCELERATION_COLOURS = {True: "green", False: "grey"}
