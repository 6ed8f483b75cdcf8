/// <reference lib="dom" />
/**
 * A yes/no question in a modal `<dialog>` (the page's "Forget this bridge?").
 * Escape, or closing it any other way, answers no; the safe button has the
 * focus, so Enter on an unread dialog does no harm.
 *
 * @module
 */

/**
 * Shows `dialog` and waits for the answer.
 *
 * @param dialog The dialog, with its two buttons inside.
 * @param yes The button that confirms.
 * @param no The button that declines (focused first).
 * @returns Whether the user confirmed.
 */
export function confirmDialog(dialog: HTMLDialogElement, yes: HTMLElement, no: HTMLElement): Promise<boolean> {
  const { promise, resolve } = Promise.withResolvers<boolean>();
  const answer = (confirmed: boolean) => {
    yes.removeEventListener("click", onYes);
    no.removeEventListener("click", onNo);
    dialog.removeEventListener("close", onClose);
    if (dialog.open) dialog.close();
    resolve(confirmed);
  };
  const onYes = () => answer(true);
  const onNo = () => answer(false);
  const onClose = () => answer(false);
  yes.addEventListener("click", onYes);
  no.addEventListener("click", onNo);
  dialog.addEventListener("close", onClose);
  if (!dialog.open) dialog.showModal();
  no.focus();
  return promise;
}
