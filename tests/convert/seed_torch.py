"""The seed's MY_NET exactly as the seed defines it, and a character LM as tutorials write one: the
PyTorch references the conversions are checked against. Imported only by tests that `pytest.importorskip("torch")` first."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MY_NET(nn.Module):
    def __init__(self, num_classes=10):
        super(MY_NET, self).__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(0.5)
        self.fc1 = nn.Linear(128 * 12 * 12, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = F.relu(self.fc1(x))
        x = self.dropout(x)
        x = self.fc2(x)
        return x


class CharLM(nn.Module):
    """A character language model the way tutorials write one: its own names for the three parts."""

    def __init__(self, vocab_size, cell="lstm", embed_dim=16, hidden_dim=32, num_layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](embed_dim, hidden_dim, num_layers,
                                                                          batch_first=True)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    def forward(self, x, state=None):
        out, state = self.rnn(self.embed(x), state)
        return self.fc(out), state
