# ~/.bashrc: executed by bash(1) for non-login shells.
case $- in
    *i*) ;;
      *) return;;
esac

HISTCONTROL=ignoreboth
HISTSIZE=1000
HISTFILESIZE=2000
shopt -s histappend checkwinsize

PS1='${debian_chroot:+($debian_chroot)}\u@\h:\w\$ '
alias ll='ls -alF'
alias la='ls -A'

export EDITOR=vim
export PATH="$HOME/.local/bin:$PATH"
