€rule x { condition: true }
