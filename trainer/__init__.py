"""Host trainer: the four Fed-Meta-Align phases and the FedAvg/FedProx baselines."""
