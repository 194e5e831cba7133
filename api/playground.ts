export const playgroundHtml = `<!doctype html><title>diffgraph</title><p>playground coming</p>`;
