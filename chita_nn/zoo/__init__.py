"""Models and datasets of the CHITA experiments."""

#: Model names the command line and the recipes accept (see ``chita_nn.zoo.problems.load_problem``).
MODELS = ("digits", "mlpnet", "resnet20")
